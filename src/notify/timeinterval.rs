//! Alertmanager's time intervals: routes that mute during some (`mute_time_intervals`) or
//! notify only during others (`active_time_intervals`), read as its `timeinterval` package.

use crate::config::{TimeIntervalConfig, TimeIntervalSpec};
use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use std::collections::HashMap;

/// Named sets of intervals; a set is on when any of its intervals contains the time.
#[derive(Default)]
pub(super) struct TimeIntervals(HashMap<String, Vec<Interval>>);

/// One interval: every field given must contain the time (inclusive ranges; times of day
/// end-exclusive, in minutes).
struct Interval {
    times: Vec<(u32, u32)>,
    weekdays: Vec<(u32, u32)>,
    days_of_month: Vec<(i32, i32)>,
    months: Vec<(u32, u32)>,
    years: Vec<(i32, i32)>,
    location: chrono_tz::Tz,
}

impl TimeIntervals {
    /// Compiles `time_intervals` and `mute_time_intervals` (one namespace, as Alertmanager's).
    pub(super) fn build(
        time_intervals: &[TimeIntervalConfig],
        mute_time_intervals: &[TimeIntervalConfig],
    ) -> Result<TimeIntervals, String> {
        let mut sets = HashMap::new();
        for (field, list) in [
            ("time_intervals", time_intervals),
            ("mute_time_intervals", mute_time_intervals),
        ] {
            for named in list {
                let at = format!("notify.{field} {:?}", named.name);
                let intervals = named
                    .time_intervals
                    .iter()
                    .enumerate()
                    .map(|(i, spec)| {
                        Interval::build(spec).map_err(|e| format!("{at}: time_intervals[{i}]: {e}"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if sets.insert(named.name.clone(), intervals).is_some() {
                    return Err(format!("{at}: defined twice"));
                }
            }
        }
        Ok(TimeIntervals(sets))
    }

    /// The names defined, for checking the routes' references.
    pub(super) fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Whether any of the named sets is on at `now`.
    pub(super) fn any_on(&self, names: &[String], now: DateTime<Utc>) -> bool {
        names.iter().any(|name| {
            self.0
                .get(name)
                .is_some_and(|set| set.iter().any(|i| i.contains(now)))
        })
    }
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// `a` or `a:b`, each end read by `one`; the range must not run backwards.
fn range<T: PartialOrd + Copy>(
    text: &str,
    what: &str,
    one: impl Fn(&str) -> Option<T>,
) -> Result<(T, T), String> {
    let bad = || format!("{what}: {text:?} is not valid");
    let (a, b) = text.split_once(':').unwrap_or((text, text));
    let begin = one(a.trim()).ok_or_else(bad)?;
    let end = one(b.trim()).ok_or_else(bad)?;
    Ok((begin, end))
}

fn named<'a>(names: &'a [&str], first: u32) -> impl Fn(&str) -> Option<u32> + 'a {
    move |text: &str| {
        let lower = text.to_ascii_lowercase();
        names
            .iter()
            .position(|n| *n == lower)
            .map(|i| i as u32 + first)
            .or_else(|| {
                let n: u32 = text.parse().ok()?;
                (first..first + names.len() as u32)
                    .contains(&n)
                    .then_some(n)
            })
    }
}

fn minutes(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl Interval {
    fn build(spec: &TimeIntervalSpec) -> Result<Interval, String> {
        let times = spec
            .times
            .iter()
            .map(|t| {
                let start = minutes(&t.start_time)
                    .ok_or_else(|| format!("times: start_time {:?} is not HH:MM", t.start_time))?;
                let end = minutes(&t.end_time)
                    .ok_or_else(|| format!("times: end_time {:?} is not HH:MM", t.end_time))?;
                if start >= end {
                    return Err(format!(
                        "times: start_time {:?} must be before end_time {:?}",
                        t.start_time, t.end_time
                    ));
                }
                Ok((start, end))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let ordered = |(a, b): (u32, u32), what: &str, text: &str| {
            if a > b {
                Err(format!("{what}: {text:?} starts after it ends"))
            } else {
                Ok((a, b))
            }
        };
        let weekdays = spec
            .weekdays
            .iter()
            .map(|w| ordered(range(w, "weekdays", named(&WEEKDAYS, 0))?, "weekdays", w))
            .collect::<Result<Vec<_>, String>>()?;
        let months = spec
            .months
            .iter()
            .map(|m| ordered(range(m, "months", named(&MONTHS, 1))?, "months", m))
            .collect::<Result<Vec<_>, String>>()?;
        let days_of_month = spec
            .days_of_month
            .iter()
            .map(|d| {
                let day = |t: &str| {
                    t.parse::<i32>()
                        .ok()
                        .filter(|n| *n != 0 && (-31..=31).contains(n))
                };
                let (a, b) = range(d, "days_of_month", day)?;
                // Alertmanager: a negative start needs a negative end; same signs in order.
                if (a < 0 && b > 0) || (a.signum() == b.signum() && a > b) {
                    return Err(format!("days_of_month: {d:?} starts after it ends"));
                }
                Ok((a, b))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let years = spec
            .years
            .iter()
            .map(|y| {
                let (a, b) = range(y, "years", |t| t.parse::<i32>().ok().filter(|n| *n > 0))?;
                if a > b {
                    return Err(format!("years: {y:?} starts after it ends"));
                }
                Ok((a, b))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let location = match spec.location.as_deref() {
            None | Some("UTC") => chrono_tz::UTC,
            Some("Local") => {
                return Err(
                    "location: Local depends on the machine; name the zone, e.g. Europe/Berlin"
                        .into(),
                );
            }
            Some(name) => name
                .parse()
                .map_err(|_| format!("location: {name:?} is not an IANA time zone"))?,
        };
        Ok(Interval {
            times,
            weekdays,
            days_of_month,
            months,
            years,
            location,
        })
    }

    /// Alertmanager's `ContainsTime`.
    fn contains(&self, now: DateTime<Utc>) -> bool {
        let t = self.location.from_utc_datetime(&now.naive_utc());
        let minute = t.hour() * 60 + t.minute();
        let within = |ranges: &[(u32, u32)], v: u32| {
            ranges.is_empty() || ranges.iter().any(|(a, b)| (*a..=*b).contains(&v))
        };
        if !self.times.is_empty() && !self.times.iter().any(|(a, b)| (*a..*b).contains(&minute)) {
            return false;
        }
        if !within(&self.weekdays, t.weekday().num_days_from_sunday()) {
            return false;
        }
        if !within(&self.months, t.month()) {
            return false;
        }
        if !self.years.is_empty()
            && !self
                .years
                .iter()
                .any(|(a, b)| (*a..=*b).contains(&t.year()))
        {
            return false;
        }
        if !self.days_of_month.is_empty() {
            let days = days_in_month(t.year(), t.month()) as i32;
            let day = t.day() as i32;
            let resolve = |d: i32| if d < 0 { days + d + 1 } else { d };
            let any = self.days_of_month.iter().any(|(a, b)| {
                let (begin, end) = (resolve(*a), resolve(*b));
                begin <= days && day >= begin.clamp(-days, days) && day <= end.clamp(-days, days)
            });
            if !any {
                return false;
            }
        }
        true
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    chrono::NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|d| d.pred_opt())
        .map_or(31, |d| d.day())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TimeRangeConfig;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn spec(f: impl FnOnce(&mut TimeIntervalSpec)) -> Interval {
        let mut s = TimeIntervalSpec::default();
        f(&mut s);
        Interval::build(&s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn business_hours_in_a_zone() {
        let hours = spec(|s| {
            s.times = vec![TimeRangeConfig {
                start_time: "09:00".into(),
                end_time: "17:00".into(),
            }];
            s.weekdays = vec!["monday:friday".into()];
            s.location = Some("Europe/Berlin".into());
        });
        // 2026-12-02 is a Wednesday; Berlin is UTC+1 in winter.
        assert!(hours.contains(at("2026-12-02T08:00:00Z")));
        assert!(!hours.contains(at("2026-12-02T07:59:00Z")));
        assert!(hours.contains(at("2026-12-02T15:59:00Z")));
        assert!(
            !hours.contains(at("2026-12-02T16:00:00Z")),
            "end is exclusive"
        );
        assert!(!hours.contains(at("2026-12-05T10:00:00Z")), "Saturday");
    }

    #[test]
    fn negative_days_of_month_count_from_the_end() {
        let last_days = spec(|s| s.days_of_month = vec!["-3:-1".into()]);
        assert!(last_days.contains(at("2027-02-26T00:00:00Z")));
        assert!(!last_days.contains(at("2027-02-25T23:59:00Z")));
        assert!(last_days.contains(at("2026-12-31T12:00:00Z")));
        let first = spec(|s| {
            s.days_of_month = vec!["1:5".into()];
            s.months = vec!["january:march".into(), "12".into()];
            s.years = vec!["2026:2027".into()];
        });
        assert!(first.contains(at("2026-12-05T23:00:00Z")));
        assert!(!first.contains(at("2026-12-06T00:00:00Z")));
        assert!(!first.contains(at("2026-11-02T00:00:00Z")));
        assert!(!first.contains(at("2028-01-02T00:00:00Z")));
    }

    #[test]
    fn invalid_intervals_are_refused_with_the_field() {
        for (f, expected) in [
            (
                Box::new(|s: &mut TimeIntervalSpec| {
                    s.times = vec![TimeRangeConfig {
                        start_time: "17:00".into(),
                        end_time: "09:00".into(),
                    }]
                }) as Box<dyn Fn(&mut TimeIntervalSpec)>,
                "times:",
            ),
            (
                Box::new(|s: &mut TimeIntervalSpec| s.weekdays = vec!["friday:monday".into()]),
                "weekdays:",
            ),
            (
                Box::new(|s: &mut TimeIntervalSpec| s.weekdays = vec!["funday".into()]),
                "weekdays:",
            ),
            (
                Box::new(|s: &mut TimeIntervalSpec| s.days_of_month = vec!["-1:5".into()]),
                "days_of_month:",
            ),
            (
                Box::new(|s: &mut TimeIntervalSpec| s.location = Some("Mars/Olympus".into())),
                "location:",
            ),
        ] {
            let mut s = TimeIntervalSpec::default();
            f(&mut s);
            let err = Interval::build(&s).err().unwrap_or_default();
            assert!(err.starts_with(expected), "{err}");
        }
    }
}
