//! Go's text/template as Prometheus rule files and Alertmanager notification
//! templates use it, with both function maps, Alertmanager's data model and
//! its default templates (`templates/default.tmpl`, `templates/email.tmpl`).
//!
//! Why our own and not a crate: `gotmpl` (0.6, MIT) ports the syntax faithfully
//! (trim markers, `range`/`with`/`else`, `define`/`block`, lazy `and`/`or`,
//! Go's comparison rules), but its values are plain lists and string-keyed maps:
//! a field is a map lookup, nothing has methods, and there is no time type.
//! Alertmanager's templates need methods on their data (`.Alerts.Firing`,
//! `.CommonLabels.SortedPairs.Values`, `.CommonLabels.Remove .GroupLabels.Names`),
//! `time.Time` fields that print as Go prints them, and `KV` maps whose `len`
//! and `range` see only the labels; emulating methods as map keys would break
//! those. `gtmpl` has the same model and has seen no release since 2021. The
//! parser, executor and functions here (about 3,500 lines in `lex`, `parse`,
//! `exec`, `funcs`, `value`, `html`) follow Go's text/template source and are
//! checked against Debian's `amtool` (`tests/template_amtool.rs`).
//!
//! Templates are parsed once: a [`TemplateSet`] holds the named definitions
//! (defaults plus the user's `templates:` files), [`TemplateSet::compile`]
//! turns one field's text into a [`Template`], which expands many times.
//!
//! Limits, since templates are user input: nesting deeper than 100 levels is
//! refused at parse time, `{{template}}` calls nested deeper than 100 and
//! output beyond 4 MiB fail the expansion (Go allows 100,000 nested calls and
//! unbounded output).

mod exec;
mod funcs;
mod html;
mod lex;
mod parse;
mod value;

use funcs::FuncSet;
use parse::Tree;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use value::{ListKind, MapKind, Struct, Value};

/// Data an alert template sees.
pub struct AlertData<'a> {
    /// `$labels` / `.Labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `$externalLabels` / `.ExternalLabels`.
    pub external_labels: &'a BTreeMap<String, String>,
    /// `$externalURL` / `.ExternalURL`.
    pub external_url: &'a str,
    /// `$value` / `.Value`.
    pub value: f64,
}

/// What a notification template sees: Alertmanager's `template.Data`.
pub struct NotificationData<'a> {
    /// `firing` or `resolved`.
    pub status: &'a str,
    /// Receiver name.
    pub receiver: &'a str,
    /// The group's labels.
    pub group_labels: BTreeMap<String, String>,
    /// Labels all alerts share.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations all alerts share.
    pub common_annotations: BTreeMap<String, String>,
    /// torchwatch's URL.
    pub external_url: &'a str,
    /// The group's alerts, `.Alerts`.
    pub alerts: Vec<NotificationAlert<'a>>,
}

/// One alert of a notification: Alertmanager's `template.Alert`.
pub struct NotificationAlert<'a> {
    /// `firing` or `resolved`.
    pub status: &'a str,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `.StartsAt`, Unix milliseconds.
    pub starts_at_ms: i64,
    /// `.EndsAt`, Unix milliseconds; `None` prints as Go's zero time.
    pub ends_at_ms: Option<i64>,
    pub generator_url: &'a str,
    pub fingerprint: String,
}

/// Named template definitions, parsed once and shared.
#[derive(Clone)]
pub struct TemplateSet {
    defs: Arc<BTreeMap<String, Arc<Tree>>>,
}

/// Alertmanager's default templates: Debian's copies of upstream's
/// `template/default.tmpl` and `template/email.tmpl` (Apache-2.0; the email
/// HTML is MIT-licensed Mailgun markup, licence kept in the file).
const DEFAULT_FILES: [(&str, &str); 2] = [
    ("default.tmpl", include_str!("../../templates/default.tmpl")),
    ("email.tmpl", include_str!("../../templates/email.tmpl")),
];

impl TemplateSet {
    /// Alertmanager's default templates (`slack.default.title`,
    /// `email.default.html`, ...), parsed on first use.
    pub fn with_defaults() -> TemplateSet {
        static DEFAULTS: OnceLock<TemplateSet> = OnceLock::new();
        DEFAULTS
            .get_or_init(|| {
                let mut defs = BTreeMap::new();
                for (name, text) in DEFAULT_FILES {
                    // The vendored files are checked by the tests; a parse
                    // failure here would be a build defect, not user input.
                    if let Ok(parsed) = parse::parse(name, text, FuncSet::Alertmanager, &[]) {
                        add_file(&mut defs, parsed);
                    }
                }
                TemplateSet {
                    defs: Arc::new(defs),
                }
            })
            .clone()
    }

    /// The defaults plus the files matching `globs` (Alertmanager's
    /// `templates:`), relative paths taken from `base_dir`; later files
    /// override earlier definitions. A glob matching nothing is allowed, as
    /// in Alertmanager. Errors name the file and line.
    pub fn load(globs: &[String], base_dir: &Path) -> Result<TemplateSet, String> {
        let mut defs = (*TemplateSet::with_defaults().defs).clone();
        for pattern in globs {
            let full = base_dir.join(pattern);
            let full = full.to_string_lossy();
            let paths = glob::glob(&full)
                .map_err(|e| format!("templates: invalid glob {pattern:?}: {e}"))?;
            let mut files: Vec<_> = paths
                .collect::<Result<_, _>>()
                .map_err(|e| format!("templates: {pattern:?}: {e}"))?;
            files.sort();
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("templates: cannot read {}: {e}", file.display()))?;
                let shown = file.display().to_string();
                let mut parsed = parse::parse(&shown, &text, FuncSet::Alertmanager, &[])?;
                // Go names a file's template, and its execution errors, after
                // the file's base name.
                let base = file
                    .file_name()
                    .map_or(shown.clone(), |n| n.to_string_lossy().into_owned());
                let file_name: Arc<str> = Arc::from(base.as_str());
                for tree in parsed.defines.iter_mut().chain([&mut parsed.root]) {
                    tree.file = Arc::clone(&file_name);
                }
                parsed.root.name = base;
                add_file(&mut defs, parsed);
            }
        }
        Ok(TemplateSet {
            defs: Arc::new(defs),
        })
    }

    /// The names of every definition, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.keys().map(String::as_str)
    }

    /// Compiles one field's text (text/template, as Alertmanager's
    /// `ExecuteTextString`); `{{define}}`s in it join this template's set.
    pub fn compile(&self, text: &str) -> Result<Template, String> {
        self.compile_as(text, false)
    }

    /// Like [`TemplateSet::compile`] for an HTML field (Alertmanager's
    /// `ExecuteHTMLString`, e.g. email `html`): values are escaped for where
    /// they land in the markup.
    pub fn compile_html(&self, text: &str) -> Result<Template, String> {
        self.compile_as(text, true)
    }

    fn compile_as(&self, text: &str, html: bool) -> Result<Template, String> {
        let parsed = parse::parse("", text, FuncSet::Alertmanager, &[])?;
        let defs = if parsed.defines.is_empty() {
            Arc::clone(&self.defs)
        } else {
            let mut defs = (*self.defs).clone();
            parse::add_definitions(&mut defs, parsed.defines);
            Arc::new(defs)
        };
        Ok(Template {
            tree: Arc::new(parsed.root),
            defs,
            funcs: FuncSet::Alertmanager,
            html,
        })
    }
}

fn add_file(defs: &mut BTreeMap<String, Arc<Tree>>, parsed: parse::Parsed) {
    let mut trees = parsed.defines;
    trees.push(parsed.root);
    parse::add_definitions(defs, trees);
}

/// A compiled template: parse once, expand many times.
#[derive(Clone)]
pub struct Template {
    tree: Arc<Tree>,
    defs: Arc<BTreeMap<String, Arc<Tree>>>,
    funcs: FuncSet,
    html: bool,
}

/// The variables Prometheus defines before every rule template.
const RULE_VARS: [&str; 4] = ["$labels", "$externalLabels", "$externalURL", "$value"];

impl Template {
    /// Parses a Prometheus rule template (annotations, labels): Prometheus'
    /// functions, `$labels`, `$externalLabels`, `$externalURL`, `$value`.
    /// The error is Go's, e.g. `template: :1: unexpected {{end}}`.
    pub fn parse(text: &str) -> Result<Template, String> {
        let parsed = parse::parse("", text, FuncSet::Prometheus, &RULE_VARS)?;
        let mut defs = BTreeMap::new();
        parse::add_definitions(&mut defs, parsed.defines);
        Ok(Template {
            tree: Arc::new(parsed.root),
            defs: Arc::new(defs),
            funcs: FuncSet::Prometheus,
            html: false,
        })
    }

    /// Expands the template for one alert.
    pub fn expand(&self, data: &AlertData) -> Result<String, String> {
        let map = |m: &BTreeMap<String, String>| Value::Map(MapKind::Plain, Rc::new(m.clone()));
        let fields = vec![
            ("Labels", map(data.labels)),
            ("ExternalLabels", map(data.external_labels)),
            ("ExternalURL", Value::str(data.external_url)),
            ("Value", Value::Float(data.value)),
        ];
        let vars = RULE_VARS
            .iter()
            .zip(&fields)
            .map(|(var, (_, v))| (var.to_string(), v.clone()))
            .collect();
        let dot = Value::Struct(Rc::new(Struct {
            type_name: "struct",
            fields,
        }));
        self.run(&dot, vars)
    }

    /// Expands the template for one notification.
    pub fn expand_notification(&self, data: &NotificationData) -> Result<String, String> {
        self.run(&notification_value(data), Vec::new())
    }

    fn run(&self, dot: &Value, vars: Vec<(String, Value)>) -> Result<String, String> {
        let mut exec = exec::Exec::new(&self.defs, self.funcs, self.html);
        exec.run(&self.tree, dot, vars)?;
        Ok(exec.out)
    }
}

fn kv(m: &BTreeMap<String, String>) -> Value {
    funcs::kv(m.clone())
}

fn notification_value(data: &NotificationData) -> Value {
    let alerts: Rc<[Value]> = data
        .alerts
        .iter()
        .map(|a| {
            Value::Struct(Rc::new(Struct {
                type_name: "template.Alert",
                fields: vec![
                    ("Status", Value::str(a.status)),
                    ("Labels", kv(&a.labels)),
                    ("Annotations", kv(&a.annotations)),
                    (
                        "StartsAt",
                        Value::Time(value::time_from_ms(Some(a.starts_at_ms))),
                    ),
                    ("EndsAt", Value::Time(value::time_from_ms(a.ends_at_ms))),
                    ("GeneratorURL", Value::str(a.generator_url)),
                    ("Fingerprint", Value::str(&a.fingerprint)),
                ],
            }))
        })
        .collect();
    Value::Struct(Rc::new(Struct {
        type_name: "template.Data",
        fields: vec![
            ("Receiver", Value::str(data.receiver)),
            ("Status", Value::str(data.status)),
            ("Alerts", Value::List(ListKind::Alerts, alerts)),
            ("GroupLabels", kv(&data.group_labels)),
            ("CommonLabels", kv(&data.common_labels)),
            ("CommonAnnotations", kv(&data.common_annotations)),
            ("ExternalURL", Value::str(data.external_url)),
        ],
    }))
}

/// `amtool template render`'s example data (cli/template_render.go in
/// Alertmanager 0.25): two alerts, with `now_ms` standing for `time.Now()`.
pub fn amtool_example(now_ms: i64) -> NotificationData<'static> {
    let kv = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let common_labels = [
        ("commonlabelkey1", "commonlabelvalue1"),
        ("commonlabelkey2", "commonlabelvalue2"),
    ];
    let common_annotations = [
        ("commonannotationkey1", "commonannotationvalue1"),
        ("commonannotationkey2", "commonannotationvalue2"),
    ];
    let alert =
        |labels: &[(&str, &str)], annotations: &[(&str, &str)], minutes: i64, fingerprint: &str| {
            let mut l = kv(labels);
            l.extend(kv(&common_labels));
            let mut a = kv(annotations);
            a.extend(kv(&common_annotations));
            NotificationAlert {
                status: "alertstatus",
                labels: l,
                annotations: a,
                starts_at_ms: now_ms - minutes * 60_000,
                ends_at_ms: Some(now_ms),
                generator_url: "https://generatorurl.com",
                fingerprint: fingerprint.to_string(),
            }
        };
    NotificationData {
        status: "alertstatus",
        receiver: "receiver",
        group_labels: kv(&[
            ("grouplabelkey1", "grouplabelvalue1"),
            ("grouplabelkey2", "grouplabelvalue2"),
        ]),
        common_labels: kv(&common_labels),
        common_annotations: kv(&common_annotations),
        external_url: "https://example.com",
        alerts: vec![
            alert(
                &[
                    ("label1", "value1"),
                    ("label2", "value2"),
                    ("instance", "foo.bar:1234"),
                ],
                &[("annotation1", "value1"), ("annotation2", "value2")],
                5,
                "fingerprint1",
            ),
            alert(
                &[("foo", "bar"), ("baz", "qux")],
                &[("aaa", "bbb"), ("ccc", "ddd")],
                10,
                "fingerprint2",
            ),
        ],
    }
}

/// Expands `text` once; a parse or execution error is rendered the way
/// Prometheus renders it, so one bad template never fails an evaluation.
pub fn expand_or_error(text: &str, data: &AlertData) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    match Template::parse(text).and_then(|t| t.expand(data)) {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, value: f64) -> String {
        let labels = BTreeMap::from([
            ("instance".to_string(), "host:9090".to_string()),
            ("job".to_string(), "node".to_string()),
        ]);
        let external = BTreeMap::from([("cluster".to_string(), "eu1".to_string())]);
        expand_or_error(
            text,
            &AlertData {
                labels: &labels,
                external_labels: &external,
                external_url: "http://tw",
                value,
            },
        )
    }

    #[test]
    fn variables_fields_and_pipelines() {
        assert_eq!(
            render("Instance {{ $labels.instance }} down", 0.0),
            "Instance host:9090 down"
        );
        assert_eq!(
            render("{{ .Labels.job }}/{{$externalLabels.cluster}}", 0.0),
            "node/eu1"
        );
        assert_eq!(render("{{ $value }}", 0.5), "0.5");
        assert_eq!(render("{{ $value }}", 1e6), "1e+06");
        assert_eq!(render("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(render("{{ $value | humanize }}", 0.001234), "1.234m");
        assert_eq!(render("{{ humanize1024 $value }}", 2048.0), "2ki");
        // %.4g of the value itself at or below 1, never cut to four characters.
        assert_eq!(render("{{ humanize1024 $value }}", 0.123456), "0.1235");
        assert_eq!(render("{{ humanize1024 $value }}", -0.987654), "-0.9877");
        assert_eq!(render("{{ humanize1024 $value }}", 1500.0), "1.465ki");
        assert_eq!(
            render("{{ $value | humanizePercentage }}", 0.12345),
            "12.35%"
        );
        assert_eq!(
            render("{{ $value | humanizeDuration }}", 3725.0),
            "1h 2m 5s"
        );
        assert_eq!(render("{{ $value | humanizeDuration }}", 0.0012), "1.2ms");
        assert_eq!(render("{{ printf \"%.2f\" $value }}", 1.23456), "1.23");
        assert_eq!(render("{{ $labels.job | toUpper }}", 0.0), "NODE");
        assert_eq!(
            render("{{ reReplaceAll \":.*\" \"\" $labels.instance }}", 0.0),
            "host"
        );
        assert_eq!(
            render("{{ if gt $value 1.0 }}high{{ else }}low{{ end }}", 2.0),
            "high"
        );
        assert_eq!(
            render("{{ if gt $value 1.0 }}high{{ else }}low{{ end }}", 0.5),
            "low"
        );
        assert_eq!(render("a  {{- $labels.job -}}  b", 0.0), "anodeb");
        assert_eq!(render("{{ $x := $labels.job }}{{ $x }}", 0.0), "node");
        assert_eq!(render("{{ $labels.missing }}", 0.0), "");
    }

    #[test]
    fn errors_render_in_place() {
        assert!(render("{{ nope $value }}", 0.0).starts_with("<error expanding template: "));
        assert!(Template::parse("{{ if $value }}x").is_err());
        assert!(Template::parse("{{ $value ").is_err());
    }

    /// Expands `text` as a notification template with amtool's example data
    /// (its "now" is 2026-12-02 04:05:06.123 UTC).
    fn am(text: &str) -> Result<String, String> {
        TemplateSet::with_defaults()
            .compile(text)?
            .expand_notification(&amtool_example(1_796_184_306_123))
    }

    #[test]
    fn range_with_else_and_variable_scope() {
        assert_eq!(
            am("{{ range $i, $a := .Alerts }}{{ $i }}={{ $a.Fingerprint }} {{ end }}").unwrap(),
            "0=fingerprint1 1=fingerprint2 "
        );
        assert_eq!(
            am("{{ range .Alerts.Firing }}x{{ else }}none{{ end }}").unwrap(),
            "none"
        );
        assert_eq!(
            am("{{ range $k, $v := .GroupLabels }}{{ $k }}:{{ $v }},{{ end }}").unwrap(),
            "grouplabelkey1:grouplabelvalue1,grouplabelkey2:grouplabelvalue2,"
        );
        assert_eq!(
            am("{{ range .Alerts }}{{ if eq .Fingerprint \"fingerprint1\" }}{{ continue }}{{ end }}{{ .Fingerprint }}{{ break }}{{ end }}")
                .unwrap(),
            "fingerprint2"
        );
        // Variables declared in a range (or an if) end with it; `=` assigns
        // to the outer one.
        let err = am("{{ range .Alerts }}{{ $x := 1 }}{{ end }}{{ $x }}").unwrap_err();
        assert_eq!(err, "template: :1: undefined variable \"$x\"");
        assert_eq!(
            am("{{ $s := \"\" }}{{ range .Alerts }}{{ $s = .Fingerprint }}{{ end }}{{ $s }}")
                .unwrap(),
            "fingerprint2"
        );
        assert_eq!(
            am("{{ with .Receiver }}<{{ . }}>{{ end }}").unwrap(),
            "<receiver>"
        );
        assert_eq!(
            am("{{ with .CommonLabels.nope }}x{{ else }}empty{{ end }}").unwrap(),
            "empty"
        );
        assert_eq!(
            am("{{ with $x := .Status }}{{ $x }}{{ end }}").unwrap(),
            "alertstatus"
        );
        assert_eq!(
            am("{{ $ }}").map(|s| s.starts_with("{receiver alertstatus [{")),
            Ok(true)
        );
    }

    #[test]
    fn trim_markers_and_comments() {
        assert_eq!(am("a  \n {{- .Receiver -}} \n  b").unwrap(), "areceiverb");
        assert_eq!(am("a {{- /* note */ -}} b").unwrap(), "ab");
        assert_eq!(am("a {{/* note */}} b").unwrap(), "a  b");
        // `{{-3}}` is the number -3, not a trim marker.
        assert_eq!(am("a {{-3}}").unwrap(), "a -3");
        assert_eq!(
            am("{{ \"x\\ty\" }}{{ `raw\\n` }}{{ 'a' }}").unwrap(),
            "x\tyraw\\n97"
        );
    }

    #[test]
    fn and_or_short_circuit() {
        // The second operand would fail if evaluated.
        assert_eq!(am("{{ and false (index .Alerts 7) }}").unwrap(), "false");
        assert_eq!(
            am("{{ or .Receiver (index .Alerts 7) }}").unwrap(),
            "receiver"
        );
        assert_eq!(
            am("{{ and 1 \"\" 2 }}|{{ or 0 \"\" }}|{{ and 1 2 }}").unwrap(),
            "||2"
        );
        assert!(
            am("{{ and true (index .Alerts 7) }}")
                .unwrap_err()
                .contains("index out of range: 7")
        );
    }

    #[test]
    fn comparisons_follow_go_types() {
        assert_eq!(
            am("{{ eq 1 1 }} {{ eq \"a\" \"b\" \"a\" }} {{ lt 1.5 2.5 }} {{ ge \"b\" \"a\" }}")
                .unwrap(),
            "true true true true"
        );
        assert_eq!(
            am("{{ eq .Receiver nil }} {{ ne 2 3 }} {{ le 2 2 }} {{ gt 2 3 }}").unwrap(),
            "false true true false"
        );
        for mixed in ["{{ eq 1 1.0 }}", "{{ lt 1 \"1\" }}", "{{ gt .Receiver 2 }}"] {
            let err = am(mixed).unwrap_err();
            assert!(
                err.ends_with("incompatible types for comparison"),
                "{mixed}: {err}"
            );
        }
        assert!(
            am("{{ lt true false }}")
                .unwrap_err()
                .ends_with("invalid type for comparison")
        );
        // Prometheus' $value is a float64: compare it with 1.0, not 1.
        assert!(
            render("{{ if gt $value 1 }}x{{ end }}", 2.0)
                .contains("incompatible types for comparison")
        );
    }

    #[test]
    fn templates_define_block_and_errors() {
        let set = TemplateSet::with_defaults();
        let t = set
            .compile("{{ define \"mine\" }}[{{ . }}]{{ end }}{{ template \"mine\" .Receiver }}{{ block \"b\" .Status }}({{ . }}){{ end }}")
            .unwrap();
        assert_eq!(
            t.expand_notification(&amtool_example(0)).unwrap(),
            "[receiver](alertstatus)"
        );
        // A field's definitions do not leak into the shared set.
        assert!(!set.names().any(|n| n == "mine"));
        assert_eq!(
            am("{{ template \"nope\" . }}").unwrap_err(),
            "template: :1:12: executing \"\" at <{{ template \"nope\" . }}>: template \"nope\" not defined"
        );
        let err =
            am("{{ define \"loop\" }}{{ template \"loop\" . }}{{ end }}{{ template \"loop\" . }}")
                .unwrap_err();
        assert!(
            err.contains("exceeded maximum template depth (100)"),
            "{err}"
        );
        // Each level writes the one below four times: level 8 is 64 MiB.
        let mut text = format!("{{{{ define \"l0\" }}}}{}{{{{ end }}}}", "x".repeat(1024));
        for level in 1..=8 {
            let below = format!("{{{{ template \"l{}\" }}}}", level - 1);
            text += &format!(
                "{{{{ define \"l{level}\" }}}}{}{{{{ end }}}}",
                below.repeat(4)
            );
        }
        let err = am(&(text + "{{ template \"l8\" }}")).unwrap_err();
        assert!(err.contains("output exceeds"), "{err}");
    }

    #[test]
    fn parse_errors_are_gos() {
        let set = TemplateSet::with_defaults();
        let err = |text: &str| set.compile(text).err().unwrap_or_default();
        assert_eq!(err("a\nb\n{{ end }}"), "template: :3: unexpected {{end}}");
        assert_eq!(err("{{ if .X }}\nx"), "template: :2: unexpected EOF");
        assert_eq!(
            err("{{ nope . }}"),
            "template: :1: function \"nope\" not defined"
        );
        assert_eq!(err("{{ $x }}"), "template: :1: undefined variable \"$x\"");
        assert_eq!(err("{{ .X"), "template: :1: unclosed action");
        assert_eq!(
            err("{{ \"abc }}"),
            "template: :1: unterminated quoted string"
        );
        assert_eq!(
            err("{{ break }}"),
            "template: :1: {{break}} outside {{range}}"
        );
        assert_eq!(
            err("{{ range . }}{{ else }}{{ else }}{{ end }}"),
            "template: :1: expected end; found {{else}}"
        );
        // Alertmanager's functions are not Prometheus' and vice versa.
        assert!(Template::parse("{{ join \",\" .X }}").is_err());
        assert!(set.compile("{{ humanize 1 }}").is_err());
    }

    #[test]
    fn alertmanager_data_and_functions() {
        assert_eq!(
            am("{{ (index .Alerts 0).StartsAt }}").unwrap(),
            "2026-12-02 04:00:06.123 +0000 UTC"
        );
        assert_eq!(
            am("{{ (index .Alerts 0).EndsAt.Unix }}").unwrap(),
            "1796184306"
        );
        assert_eq!(
            am("{{ range .Alerts }}{{ date \"2006-01-02T15:04:05.000Z07:00 Mon Jan _2 3PM\" .StartsAt }};{{ end }}").unwrap(),
            "2026-12-02T04:00:06.123Z Wed Dec  2 4AM;2026-12-02T03:55:06.123Z Wed Dec  2 3AM;"
        );
        assert_eq!(
            am("{{ (tz \"UTC\" (index .Alerts 0).StartsAt).Format \"15:04\" }}").unwrap(),
            "04:00"
        );
        assert_eq!(
            am("{{ tz \"Europe/Paris\" (index .Alerts 0).StartsAt }}").unwrap(),
            "2026-12-02 05:00:06.123 +0100 CET"
        );
        assert_eq!(
            am("{{ (tz \"America/New_York\" (index .Alerts 0).StartsAt).Format \"Jan 2 15:04 MST -07:00 Z0700\" }}").unwrap(),
            "Dec 1 23:00 EST -05:00 -0500"
        );
        assert!(
            am("{{ tz \"Mars/Olympus\" (index .Alerts 0).StartsAt }}")
                .unwrap_err()
                .contains("unknown time zone Mars/Olympus")
        );
        assert!(
            am("{{ since (index .Alerts 0).StartsAt | humanizeDuration }}")
                .unwrap()
                .ends_with('s')
        );
        assert_eq!(
            am("{{ .CommonLabels.SortedPairs.Names | join \"+\" }}").unwrap(),
            "commonlabelkey1+commonlabelkey2"
        );
        assert_eq!(
            am("{{ (.CommonLabels.Remove (stringSlice \"commonlabelkey1\")).Values }}").unwrap(),
            "[commonlabelvalue2]"
        );
        assert_eq!(
            am("{{ len .Alerts }} {{ len .Alerts.Resolved }} {{ len \"héllo\" }}").unwrap(),
            "2 0 6"
        );
        assert_eq!(
            am("{{ title \"hELLO world\" }} {{ toUpper \"ß\" }} {{ trimSpace \" x \" }}").unwrap(),
            "Hello World SS x"
        );
        assert_eq!(
            am("{{ printf \"%s-%d-%05.1f-%v-%x\" \"a\" 7 3.14159 true 255 }}").unwrap(),
            "a-7-003.1-true-ff"
        );
        assert_eq!(
            am("{{ printf \"%d %s\" 1.5 2 }}").unwrap(),
            "%!d(float64=1.5) %!s(int=2)"
        );
        assert_eq!(
            am("{{ print 1 2 \"a\" \"b\" 3 }}|{{ println 1 \"a\" }}").unwrap(),
            "1 2ab3|1 a\n"
        );
        assert_eq!(
            am("{{ urlquery \"a b&c\" }} {{ html \"<a href='x'>\" }} {{ js \"a'b<\" }}").unwrap(),
            "a+b%26c &lt;a href=&#39;x&#39;&gt; a\\'b\\u003C"
        );
        assert_eq!(
            am("{{ slice \"abcdef\" 1 3 }} {{ index .GroupLabels \"grouplabelkey1\" }}").unwrap(),
            "bc grouplabelvalue1"
        );
        assert_eq!(
            am("{{ toJson .GroupLabels }}").unwrap(),
            r#"{"grouplabelkey1":"grouplabelvalue1","grouplabelkey2":"grouplabelvalue2"}"#
        );
        assert_eq!(
            am("{{ .Nope }}").unwrap_err(),
            "template: :1:3: executing \"\" at <.Nope>: can't evaluate field Nope in type template.Data"
        );
        assert!(
            am("{{ .Receiver.Foo }}")
                .unwrap_err()
                .ends_with("can't evaluate field Foo in type string")
        );
        assert!(
            am("{{ .Receiver 1 }}")
                .unwrap_err()
                .ends_with("Receiver has arguments but cannot be invoked as function")
        );
        assert!(
            am("{{ join \",\" .CommonLabels.SortedPairs }}")
                .unwrap_err()
                .contains("expected []string; got template.Pairs")
        );
    }

    #[test]
    fn html_escapes_by_context() {
        let set = TemplateSet::with_defaults();
        let data = amtool_example(0);
        let t = set
            .compile_html("<!-- c --><p title=\"{{ .Receiver }}x\">{{ printf \"<%s & '+'>\" .Receiver }}</p><a href=\"{{ printf \"javascript:%s\" .Receiver }}\">{{ safeHtml \"<b>\" }}</a><a href=\"/x?q={{ printf \"a b&%s\" .Receiver }}\">")
            .unwrap();
        assert_eq!(
            t.expand_notification(&data).unwrap(),
            "<p title=\"receiverx\">&lt;receiver &amp; &#39;&#43;&#39;&gt;</p><a href=\"#ZgotmplZ\"><b></a><a href=\"/x?q=a%20b%26receiver\">"
        );
        let err = set
            .compile_html("<script>var x = {{ .Receiver }}</script>")
            .unwrap()
            .expand_notification(&data)
            .unwrap_err();
        assert!(
            err.contains("actions inside <script> are not supported"),
            "{err}"
        );
    }

    #[test]
    fn html_text_with_multibyte_characters_before_a_tag() {
        // Found by the template fuzz target: the escaper looked one byte past a two-byte
        // character (U+05C2) for a tag start and sliced inside it.
        let set = TemplateSet::with_defaults();
        let data = amtool_example(0);
        let t = set
            .compile_html("rs\u{5c2}<b>{{ .Receiver }}</b>\u{5c2}")
            .unwrap();
        assert_eq!(
            t.expand_notification(&data).unwrap(),
            "rs\u{5c2}<b>receiver</b>\u{5c2}"
        );
    }
}
