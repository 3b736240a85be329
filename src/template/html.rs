//! The part of html/template's contextual escaping that Alertmanager's HTML
//! templates need (`email.default.html`): the output is followed as it is
//! written, HTML comments in template text are dropped, and each action's
//! value is escaped for where it lands: element text, a quoted or unquoted
//! attribute value, or a URL attribute (filtered and normalised at its start,
//! query-escaped after `?`). Actions inside `<script>`, `<style>`, JavaScript
//! event attributes or `style` attributes are refused with an error rather
//! than escaped wrongly. Go decides contexts statically per template; here
//! they follow the output, which agrees for templates whose branches end in
//! the context they started in (the ones html/template accepts).

use super::funcs::html_escape;
use super::value::{Value, print};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Attr {
    Normal,
    Url,
    Script,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Text,
    /// Inside `<!-- -->` in template text: not written.
    Comment,
    /// In a tag's name (`<table`).
    TagName,
    /// Inside a tag, between attributes.
    Tag,
    AttrName(String),
    AfterName(String),
    BeforeValue(Attr),
    /// In an attribute value; `quote` is `None` when unquoted.
    Value {
        attr: Attr,
        quote: Option<char>,
        url_part: UrlPart,
    },
    /// In `<script>`/`<style>` content, until the closing tag.
    RawText(String),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum UrlPart {
    Start,
    PreQuery,
    Query,
}

/// Where the output is, as far as escaping cares.
#[derive(Debug)]
pub(super) struct Tracker {
    state: State,
    tag: String,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: State::Text,
            tag: String::new(),
        }
    }
}

fn attr_kind(name: &str) -> Attr {
    let name = name.to_ascii_lowercase();
    if name.starts_with("on") || name == "style" {
        Attr::Script
    } else if matches!(
        name.as_str(),
        "href"
            | "src"
            | "action"
            | "cite"
            | "data"
            | "formaction"
            | "poster"
            | "background"
            | "longdesc"
            | "usemap"
    ) || name.contains("url")
        || name.contains("uri")
    {
        Attr::Url
    } else {
        Attr::Normal
    }
}

impl Tracker {
    /// Template text: returned as written, minus HTML comments.
    pub fn text(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if self.state == State::Text && rest.starts_with("<!--") {
                self.state = State::Comment;
                rest = &rest[4..];
                continue;
            }
            if self.state == State::Comment {
                match rest.find("-->") {
                    Some(i) => {
                        rest = &rest[i + 3..];
                        self.state = State::Text;
                    }
                    None => rest = "",
                }
                continue;
            }
            if let State::RawText(tag) = &self.state {
                let close = format!("</{tag}");
                match rest.to_ascii_lowercase().find(&close) {
                    Some(i) => {
                        out.push_str(&rest[..i]);
                        rest = &rest[i..];
                        self.state = State::Text;
                    }
                    None => {
                        out.push_str(rest);
                        rest = "";
                    }
                }
                continue;
            }
            self.step(c, rest);
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    fn step(&mut self, c: char, rest: &str) {
        self.state = match std::mem::replace(&mut self.state, State::Text) {
            State::Text => {
                let next = rest[c.len_utf8()..].chars().next();
                if c == '<' && next.is_some_and(|n| n.is_ascii_alphabetic() || n == '/') {
                    self.tag = rest[1..]
                        .trim_start_matches('/')
                        .chars()
                        .take_while(char::is_ascii_alphanumeric)
                        .collect::<String>()
                        .to_ascii_lowercase();
                    if rest[1..].starts_with('/') {
                        self.tag.clear();
                    }
                    State::TagName
                } else {
                    State::Text
                }
            }
            State::TagName => match c {
                '>' => self.end_tag(),
                c if c.is_whitespace() => State::Tag,
                _ => State::TagName,
            },
            State::Tag => match c {
                '>' => self.end_tag(),
                c if c.is_whitespace() || c == '/' => State::Tag,
                c => State::AttrName(c.to_string()),
            },
            State::AttrName(mut name) => match c {
                '=' => State::BeforeValue(attr_kind(&name)),
                '>' => self.end_tag(),
                c if c.is_whitespace() => State::AfterName(name),
                c => {
                    name.push(c);
                    State::AttrName(name)
                }
            },
            State::AfterName(name) => match c {
                '=' => State::BeforeValue(attr_kind(&name)),
                '>' => self.end_tag(),
                c if c.is_whitespace() => State::AfterName(name),
                c => State::AttrName(c.to_string()),
            },
            State::BeforeValue(attr) => match c {
                c if c.is_whitespace() => State::BeforeValue(attr),
                '"' | '\'' => State::Value {
                    attr,
                    quote: Some(c),
                    url_part: UrlPart::Start,
                },
                '>' => self.end_tag(),
                c => State::Value {
                    attr,
                    quote: None,
                    url_part: url_after(UrlPart::Start, c),
                },
            },
            State::Value {
                attr,
                quote,
                url_part,
            } => {
                let ends = match quote {
                    Some(q) => c == q,
                    None => c.is_whitespace() || c == '>',
                };
                if !ends {
                    State::Value {
                        attr,
                        quote,
                        url_part: url_after(url_part, c),
                    }
                } else if c == '>' {
                    self.end_tag()
                } else {
                    State::Tag
                }
            }
            other => other,
        };
    }

    fn end_tag(&mut self) -> State {
        match self.tag.as_str() {
            "script" | "style" => State::RawText(std::mem::take(&mut self.tag)),
            _ => State::Text,
        }
    }

    /// The escaped text of an action's value. `escaped_by` is the pipeline's
    /// last function: html/template does not escape twice after `html` in
    /// text or `urlquery` in a URL's query.
    pub fn action(&self, v: &Value, escaped_by: Option<&str>) -> Result<String, String> {
        let text = match v {
            Value::Nil => String::new(),
            other => print(other),
        };
        let safe_html = matches!(v, Value::Html(_));
        let out = match &self.state {
            State::Text => {
                if safe_html || escaped_by == Some("html") {
                    text
                } else {
                    html_escape_plus(&text)
                }
            }
            State::Comment => String::new(),
            State::RawText(tag) => {
                return Err(format!(
                    "actions inside <{tag}> are not supported in torchwatch's HTML templates"
                ));
            }
            State::TagName | State::Tag | State::AttrName(_) | State::AfterName(_) => {
                return Err("actions that write attribute names are not supported in torchwatch's HTML templates".into());
            }
            State::BeforeValue(attr) | State::Value { attr, .. } if *attr == Attr::Script => {
                return Err("actions inside JavaScript or style attributes are not supported in torchwatch's HTML templates".into());
            }
            State::BeforeValue(_) => {
                return Err("actions that write a whole unquoted attribute value are not supported in torchwatch's HTML templates".into());
            }
            State::Value { attr, url_part, .. } => {
                let text = if safe_html { strip_tags(&text) } else { text };
                let text = match (attr, url_part) {
                    (Attr::Url, UrlPart::Start) => normalize_url(&filter_url(&text)),
                    (Attr::Url, UrlPart::PreQuery) => normalize_url(&text),
                    (Attr::Url, UrlPart::Query) if escaped_by == Some("urlquery") => text,
                    (Attr::Url, UrlPart::Query) => escape_url(&text),
                    _ => text,
                };
                html_escape_plus(&text)
            }
        };
        // As in Go, an action leaves the URL part where it was: only
        // template text moves it.
        Ok(out)
    }
}

fn url_after(part: UrlPart, c: char) -> UrlPart {
    match (part, c) {
        (UrlPart::Query, _) | (_, '?' | '#') => UrlPart::Query,
        _ => UrlPart::PreQuery,
    }
}

/// html/template's `htmlEscaper`: HTMLEscapeString plus `+` as `&#43;`.
fn html_escape_plus(s: &str) -> String {
    html_escape(s).replace('+', "&#43;")
}

/// html/template's `urlFilter`: only http, https and mailto URLs (or
/// scheme-less ones) pass; others become `#ZgotmplZ`.
fn filter_url(s: &str) -> String {
    match s.split_once(':') {
        Some((scheme, _))
            if !scheme.contains('/')
                && !["http", "https", "mailto"].contains(&scheme.to_ascii_lowercase().as_str()) =>
        {
            "#ZgotmplZ".into()
        }
        _ => s.to_string(),
    }
}

fn url_process(s: &str, normalize: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        let keep = match b {
            b'!' | b'#' | b'$' | b'&' | b'*' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?'
            | b'@' | b'[' | b']' => normalize,
            b'-' | b'.' | b'_' | b'~' => true,
            b'%' => normalize,
            b => b.is_ascii_alphanumeric(),
        };
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// html/template's `urlNormalizer`: percent-encodes what may not appear in a URL.
fn normalize_url(s: &str) -> String {
    url_process(s, true)
}

/// html/template's `urlEscaper`: percent-encodes all but unreserved characters.
fn escape_url(s: &str) -> String {
    url_process(s, false)
}

/// Markup from `safeHtml` inside an attribute keeps only its text.
fn strip_tags(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}
