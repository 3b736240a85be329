//! The CPU and memory limits of this process' own cgroup, v2 or v1: `/proc/self/cgroup` names
//! the group, `/proc/self/mountinfo` where its hierarchy is mounted, and every level from the
//! group up to the mount's root is read, since a parent's limit binds its children too.

use std::path::{Path, PathBuf};

/// Limits found; `None` where none is set.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Limits {
    /// CPU quota in cores (`cpu.max`, or `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
    pub cpu_cores: Option<f64>,
    /// Memory limit in bytes (`memory.max`, or `memory.limit_in_bytes`).
    pub memory_bytes: Option<f64>,
}

/// Reads this process' limits from the live system.
pub fn own_limits() -> Limits {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    match (
        read(Path::new("/proc/self/cgroup")),
        read(Path::new("/proc/self/mountinfo")),
    ) {
        (Some(cgroup), Some(mountinfo)) => limits(&cgroup, &mountinfo, read),
        _ => Limits::default(),
    }
}

/// One cgroup hierarchy mount: where it is, what part of the tree it shows, whether v2.
struct Mount {
    root: PathBuf,
    point: PathBuf,
    v2: bool,
    controllers: Vec<String>,
}

fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // id parent major:minor root point options [optional...] - fstype source super
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            let fstype = after.next()?;
            let _source = after.next();
            let options = after.next().unwrap_or("");
            let v2 = fstype == "cgroup2";
            if !v2 && fstype != "cgroup" {
                return None;
            }
            Some(Mount {
                root: PathBuf::from(fields.get(3)?),
                point: PathBuf::from(fields.get(4)?),
                v2,
                controllers: options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The directories from the group up to its mount's root, innermost first.
fn levels(mount: &Mount, group: &str) -> Vec<PathBuf> {
    let group = Path::new(group);
    // Inside a container the mount's root is the group itself; outside, the full path.
    let relative = group.strip_prefix(&mount.root).unwrap_or(group);
    let mut dir = mount
        .point
        .join(relative.strip_prefix("/").unwrap_or(relative));
    let mut out = vec![dir.clone()];
    while dir != mount.point && dir.pop() {
        out.push(dir.clone());
    }
    out
}

/// The smallest limit along `dirs`, each read by `parse`.
fn tightest(dirs: &[PathBuf], parse: impl Fn(&Path) -> Option<f64>) -> Option<f64> {
    dirs.iter()
        .filter_map(|d| parse(d))
        .fold(None, |min, v| Some(min.map_or(v, |m: f64| m.min(v))))
}

/// Limits from the text of `/proc/self/cgroup` and `/proc/self/mountinfo`; `read` reads a file.
pub fn limits(cgroup: &str, mountinfo: &str, read: impl Fn(&Path) -> Option<String>) -> Limits {
    let mounts = mounts(mountinfo);
    let mut found = Limits::default();
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(group)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let number = |dir: &Path, file: &str| -> Option<f64> {
            read(&dir.join(file))?.trim().parse::<f64>().ok()
        };
        if controllers.is_empty() {
            // v2's single hierarchy: `max` means no limit.
            let Some(mount) = mounts.iter().find(|m| m.v2) else {
                continue;
            };
            let dirs = levels(mount, group);
            found.cpu_cores = found.cpu_cores.or(tightest(&dirs, |d| {
                let text = read(&d.join("cpu.max"))?;
                let mut fields = text.split_whitespace();
                let quota: f64 = fields.next()?.parse().ok()?;
                let period: f64 = fields.next()?.parse().ok()?;
                (period > 0.0).then_some(quota / period)
            }));
            found.memory_bytes = found
                .memory_bytes
                .or(tightest(&dirs, |d| number(d, "memory.max")));
            continue;
        }
        for controller in controllers.split(',') {
            let Some(mount) = mounts
                .iter()
                .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
            else {
                continue;
            };
            let dirs = levels(mount, group);
            match controller {
                "cpu" => {
                    found.cpu_cores = found.cpu_cores.or(tightest(&dirs, |d| {
                        let quota = number(d, "cpu.cfs_quota_us")?;
                        let period = number(d, "cpu.cfs_period_us")?;
                        (quota > 0.0 && period > 0.0).then_some(quota / period)
                    }))
                }
                // v1 writes "no limit" as the largest page-aligned i64.
                "memory" => {
                    found.memory_bytes = found.memory_bytes.or(tightest(&dirs, |d| {
                        number(d, "memory.limit_in_bytes").filter(|v| *v < 9.0e18)
                    }))
                }
                _ => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn fs(files: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, c)| (PathBuf::from(p), c.to_string()))
            .collect();
        move |p| files.get(p).cloned()
    }

    #[test]
    fn v2_takes_the_tightest_limit_from_the_group_up() {
        let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let cgroup = "0::/kubepods/pod1/ctr\n";
        let limits = limits(
            cgroup,
            mountinfo,
            fs(&[
                ("/sys/fs/cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n"),
                ("/sys/fs/cgroup/kubepods/pod1/cpu.max", "150000 100000\n"),
                ("/sys/fs/cgroup/kubepods/cpu.max", "400000 100000\n"),
                ("/sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "536870912\n"),
                ("/sys/fs/cgroup/kubepods/memory.max", "max\n"),
                ("/sys/fs/cgroup/memory.max", "1073741824\n"),
            ]),
        );
        assert_eq!(limits.cpu_cores, Some(1.5));
        assert_eq!(limits.memory_bytes, Some(536870912.0));
    }

    #[test]
    fn v2_in_a_container_sees_its_group_as_the_mount_root() {
        // The container's namespace mounts its own group at /sys/fs/cgroup.
        let mountinfo = "600 500 0:26 /kubepods/pod1/ctr /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let limits = limits(
            "0::/kubepods/pod1/ctr\n",
            mountinfo,
            fs(&[
                ("/sys/fs/cgroup/cpu.max", "50000 100000\n"),
                ("/sys/fs/cgroup/memory.max", "268435456\n"),
            ]),
        );
        assert_eq!(limits.cpu_cores, Some(0.5));
        assert_eq!(limits.memory_bytes, Some(268435456.0));
    }

    #[test]
    fn v1_reads_each_controllers_own_hierarchy() {
        let mountinfo = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             40 31 0:40 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let cgroup = "4:memory:/jobs/a\n2:cpu,cpuacct:/jobs/a\n0::/\n";
        let limits = limits(
            cgroup,
            mountinfo,
            fs(&[
                ("/sys/fs/cgroup/cpu,cpuacct/jobs/a/cpu.cfs_quota_us", "-1\n"),
                (
                    "/sys/fs/cgroup/cpu,cpuacct/jobs/a/cpu.cfs_period_us",
                    "100000\n",
                ),
                (
                    "/sys/fs/cgroup/cpu,cpuacct/jobs/cpu.cfs_quota_us",
                    "200000\n",
                ),
                (
                    "/sys/fs/cgroup/cpu,cpuacct/jobs/cpu.cfs_period_us",
                    "100000\n",
                ),
                (
                    "/sys/fs/cgroup/memory/jobs/a/memory.limit_in_bytes",
                    "2147483648\n",
                ),
                (
                    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                    "9223372036854771712\n",
                ),
            ]),
        );
        assert_eq!(limits.cpu_cores, Some(2.0));
        assert_eq!(limits.memory_bytes, Some(2147483648.0));
    }

    #[test]
    fn no_limits_anywhere_is_none() {
        let mountinfo = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let limits = limits(
            "0::/user.slice\n",
            mountinfo,
            fs(&[
                ("/sys/fs/cgroup/user.slice/cpu.max", "max 100000\n"),
                ("/sys/fs/cgroup/user.slice/memory.max", "max\n"),
            ]),
        );
        assert_eq!(limits, Limits::default());
    }
}
