//! Go's text/template parser: a file becomes its top-level tree plus the trees
//! of its `{{define}}`s and `{{block}}`s; functions and variables are checked
//! here, as Go does, so a typo fails at load rather than at the first alert.

use super::funcs::FuncSet;
use super::lex::{Kind, Token, lex};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Deeper nesting (parentheses, control structures) is refused: templates are
/// user input and the parser and executor recurse.
const MAX_NESTING: usize = 100;

/// A parsed template body.
#[derive(Debug)]
pub(super) struct Tree {
    pub name: String,
    /// The file (or `""` for a field's text) it was parsed from, for errors.
    pub file: Arc<str>,
    pub root: Vec<Node>,
}

/// Where a pipeline is: its line, 0-based byte column (as Go reports them) and
/// text, for Go-style execution errors.
#[derive(Debug, Clone)]
pub(super) struct Pos {
    pub line: usize,
    pub col: usize,
    pub src: Arc<str>,
}

#[derive(Debug)]
pub(super) enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    With(Branch),
    Range(Branch),
    Template {
        pos: Pos,
        name: String,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

#[derive(Debug)]
pub(super) struct Branch {
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Vec<Node>,
}

#[derive(Debug)]
pub(super) struct Pipe {
    pub pos: Pos,
    /// `$x = ...` assigns instead of declaring.
    pub is_assign: bool,
    pub decl: Vec<String>,
    pub cmds: Vec<Command>,
}

#[derive(Debug)]
pub(super) struct Command {
    pub args: Vec<Arg>,
}

#[derive(Debug)]
pub(super) enum Arg {
    /// `.A.B` (a field chain on dot).
    Field(Vec<String>),
    /// `$x.A.B`.
    Variable(String, Vec<String>),
    /// `(pipeline).A.B` or `fn.A` when the operand is followed by fields.
    Chain(Box<Arg>, Vec<String>),
    Dot,
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Function(String),
    Pipe(Pipe),
}

/// What a parsed file or text yields: its top-level tree and its definitions.
pub(super) struct Parsed {
    pub root: Tree,
    pub defines: Vec<Tree>,
}

/// Parses `src` as template `name`; `vars` are predeclared variables
/// (`$labels` for Prometheus' rule templates). The error is Go's:
/// `template: NAME:LINE: message`.
pub(super) fn parse(
    name: &str,
    src: &str,
    funcs: FuncSet,
    vars: &[&str],
) -> Result<Parsed, String> {
    let tokens = lex(src).map_err(|(line, msg)| format!("template: {name}:{line}: {msg}"))?;
    let mut p = Parser {
        name: name.to_string(),
        file: Arc::from(name),
        src,
        tokens,
        pos: 0,
        funcs,
        vars: std::iter::once("$")
            .chain(vars.iter().copied())
            .map(str::to_string)
            .collect(),
        defines: Vec::new(),
        depth: 0,
        range_depth: 0,
    };
    let root = p.list(true)?;
    if let Some(stop) = root.1 {
        return Err(p.error_at(&stop, format!("unexpected {}", describe(&stop))));
    }
    Ok(Parsed {
        root: Tree {
            name: name.to_string(),
            file: Arc::clone(&p.file),
            root: root.0,
        },
        defines: p.defines,
    })
}

/// What stopped a list: `{{end}}`, `{{else ...}}`.
struct Stop {
    token: usize,
    keyword: String,
}

struct Parser<'a> {
    name: String,
    file: Arc<str>,
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    funcs: FuncSet,
    vars: Vec<String>,
    defines: Vec<Tree>,
    depth: usize,
    range_depth: usize,
}

/// Go's name for what stopped a list: `{{end}}`, `{{else}}`.
fn describe(stop: &Stop) -> String {
    format!("{{{{{}}}}}", stop.keyword)
}

type ListResult = Result<(Vec<Node>, Option<Stop>), String>;

impl Parser<'_> {
    fn error_at(&self, stop: &Stop, msg: String) -> String {
        let line = self.tokens.get(stop.token).map_or(1, |t| t.line);
        format!("template: {}:{line}: {msg}", self.name)
    }

    fn error(&self, msg: impl std::fmt::Display) -> String {
        // Past the last token is the end of the text, on its last line.
        let line = self
            .tokens
            .get(self.pos)
            .map_or_else(|| self.src.matches('\n').count() + 1, |t| t.line);
        format!("template: {}:{line}: {msg}", self.name)
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn peek_kind(&self) -> Option<Kind> {
        self.peek().map(|t| t.kind.clone())
    }

    fn next(&mut self) -> Result<Token, String> {
        let t = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or_else(|| self.error("unexpected EOF"))?;
        self.pos += 1;
        Ok(t)
    }

    fn skip_space(&mut self) {
        while self.peek_kind() == Some(Kind::Space) {
            self.pos += 1;
        }
    }

    /// The next token that is not a space.
    fn next_non_space(&mut self) -> Result<Token, String> {
        self.skip_space();
        self.next()
    }

    fn expect(&mut self, kind: Kind, context: &str) -> Result<Token, String> {
        let t = self.next_non_space()?;
        if t.kind != kind {
            return Err(self.error(format!("unexpected {} in {context}", quote_token(&t))));
        }
        Ok(t)
    }

    fn nest(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error(format!("nesting deeper than {MAX_NESTING} levels")));
        }
        Ok(())
    }

    /// Parses nodes until `{{end}}`/`{{else}}` (returned) or EOF (`top`
    /// only; inside a control structure EOF is an error).
    fn list(&mut self, top: bool) -> ListResult {
        let mut nodes = Vec::new();
        while let Some(t) = self.peek().cloned() {
            match t.kind {
                Kind::Text => {
                    self.pos += 1;
                    nodes.push(Node::Text(t.text));
                }
                Kind::LeftDelim => {
                    let start = self.pos;
                    self.pos += 1;
                    self.skip_space();
                    let keyword = match self.peek() {
                        Some(k) if k.kind == Kind::Keyword => k.text.clone(),
                        _ => String::new(),
                    };
                    match keyword.as_str() {
                        "end" | "else" => {
                            self.pos += 1;
                            return Ok((
                                nodes,
                                Some(Stop {
                                    token: start,
                                    keyword,
                                }),
                            ));
                        }
                        "" => {
                            let pipe = self.pipeline("command")?;
                            nodes.push(Node::Action(pipe));
                        }
                        _ => {
                            self.pos += 1;
                            if let Some(node) = self.control(&keyword, start, top)? {
                                nodes.push(node);
                            }
                        }
                    }
                }
                _ => return Err(self.error(format!("unexpected {}", quote_token(&t)))),
            }
        }
        if top {
            Ok((nodes, None))
        } else {
            Err(self.error("unexpected EOF"))
        }
    }

    /// The position of the action's text from token `start` to its `}}`.
    fn pos_of(&self, start: usize, with_delims: bool) -> Pos {
        let t = &self.tokens[start.min(self.tokens.len() - 1)];
        let close = self.tokens[start..]
            .iter()
            .find(|t| t.kind == Kind::RightDelim);
        let end = match close {
            Some(c) if with_delims => c.offset + c.text.len(),
            Some(c) => c.offset,
            None => self.src.len(),
        };
        Pos {
            line: t.line,
            col: t.col - 1,
            src: Arc::from(self.src[t.offset..end].trim()),
        }
    }

    fn control(&mut self, keyword: &str, start: usize, top: bool) -> Result<Option<Node>, String> {
        Ok(Some(match keyword {
            "if" | "with" | "range" => {
                self.nest()?;
                let node = self.branch(keyword)?;
                self.depth -= 1;
                node
            }
            "template" => self.template_call(start)?,
            "block" => {
                let node = self.template_call(start)?;
                let Node::Template { name, .. } = &node else {
                    return Err(self.error("block without a name"));
                };
                let name = name.clone();
                self.definition(name)?;
                node
            }
            "define" => {
                if !top || self.depth > 0 {
                    return Err(self.error("unexpected \"define\" in command"));
                }
                let name = self.template_name("define clause")?;
                self.expect(Kind::RightDelim, "define clause")?;
                self.definition(name)?;
                return Ok(None);
            }
            "break" | "continue" => {
                if self.range_depth == 0 {
                    return Err(self.error(format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                }
                self.expect(Kind::RightDelim, keyword)?;
                if keyword == "break" {
                    Node::Break
                } else {
                    Node::Continue
                }
            }
            other => return Err(self.error(format!("unexpected {{{{{other}}}}}"))),
        }))
    }

    /// The body of a `{{define}}` or `{{block}}`, up to its `{{end}}`; its
    /// variables are its own.
    fn definition(&mut self, name: String) -> Result<(), String> {
        let vars = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let range_depth = std::mem::take(&mut self.range_depth);
        let (root, stop) = self.list(false)?;
        self.vars = vars;
        self.range_depth = range_depth;
        match stop {
            Some(s) if s.keyword == "end" => {
                self.expect(Kind::RightDelim, "end")?;
                self.defines.push(Tree {
                    name,
                    file: Arc::clone(&self.file),
                    root,
                });
                Ok(())
            }
            Some(s) => Err(self.error_at(&s, format!("unexpected {} in definition", describe(&s)))),
            None => Err(self.error("unexpected EOF")),
        }
    }

    fn template_name(&mut self, context: &str) -> Result<String, String> {
        let t = self.next_non_space()?;
        match t.kind {
            Kind::Str | Kind::RawStr => unquote(&t.text).map_err(|e| self.error(e)),
            _ => Err(self.error(format!("unexpected {} in {context}", quote_token(&t)))),
        }
    }

    fn template_call(&mut self, start: usize) -> Result<Node, String> {
        let mut pos = self.pos_of(start, true);
        self.skip_space();
        // Go places a {{template}} at its name.
        if let Some(t) = self.peek() {
            (pos.line, pos.col) = (t.line, t.col - 1);
        }
        let name = self.template_name("template clause")?;
        self.skip_space();
        let pipe = if self.peek_kind() == Some(Kind::RightDelim) {
            self.pos += 1;
            None
        } else {
            Some(self.pipeline("template clause")?)
        };
        Ok(Node::Template { pos, name, pipe })
    }

    fn branch(&mut self, keyword: &str) -> Result<Node, String> {
        let mark = self.vars.len();
        let pipe = self.pipeline(keyword)?;
        if keyword == "range" {
            self.range_depth += 1;
        }
        let (list, stop) = self.list(false)?;
        if keyword == "range" {
            self.range_depth -= 1;
        }
        let stop = stop.ok_or_else(|| self.error("unexpected EOF"))?;
        let else_list = if stop.keyword == "else" {
            self.skip_space();
            // `{{else if ...}}` / `{{else with ...}}` chain a nested branch
            // that shares this one's {{end}}.
            let chained = self
                .peek()
                .filter(|t| t.kind == Kind::Keyword && t.text == keyword && keyword != "range");
            if chained.is_some() {
                self.pos += 1;
                vec![self.branch(keyword)?]
            } else {
                self.expect(Kind::RightDelim, "else")?;
                let (else_list, stop) = self.list(false)?;
                match stop {
                    Some(s) if s.keyword == "end" => self.expect(Kind::RightDelim, "end")?,
                    Some(s) => {
                        return Err(
                            self.error_at(&s, format!("expected end; found {}", describe(&s)))
                        );
                    }
                    None => return Err(self.error("unexpected EOF")),
                };
                else_list
            }
        } else {
            self.expect(Kind::RightDelim, "end")?;
            Vec::new()
        };
        self.vars.truncate(mark);
        let branch = Branch {
            pipe,
            list,
            else_list,
        };
        Ok(match keyword {
            "if" => Node::If(branch),
            "with" => Node::With(branch),
            _ => Node::Range(branch),
        })
    }

    /// A pipeline up to the action's `}}`: declarations, then commands
    /// separated by `|`. `range` allows two declared variables.
    fn pipeline(&mut self, context: &str) -> Result<Pipe, String> {
        self.skip_space();
        let pos = self.pos_of(self.pos, false);
        let mut decl = Vec::new();
        let mut is_assign = false;
        {
            let save = self.pos;
            let mut names = Vec::new();
            loop {
                self.skip_space();
                match self.peek() {
                    Some(t) if t.kind == Kind::Variable => {
                        names.push(t.text.clone());
                        self.pos += 1;
                    }
                    _ => break,
                }
                self.skip_space();
                match self.peek_kind() {
                    Some(Kind::Comma) if context == "range" && names.len() == 1 => {
                        self.pos += 1;
                    }
                    Some(Kind::Declare) | Some(Kind::Assign) => {
                        is_assign = self.peek_kind() == Some(Kind::Assign);
                        self.pos += 1;
                        decl = std::mem::take(&mut names);
                        break;
                    }
                    _ => break,
                }
            }
            if decl.is_empty() {
                self.pos = save;
            } else if decl.len() > 1 && context != "range" {
                return Err(self.error(format!("too many declarations in {context}")));
            }
        }
        let mut cmds = Vec::new();
        loop {
            self.skip_space();
            match self.peek_kind() {
                Some(Kind::RightDelim) => {
                    self.pos += 1;
                    break;
                }
                Some(Kind::RightParen) if context == "parenthesized pipeline" => {
                    self.pos += 1;
                    break;
                }
                None => return Err(self.error(format!("unclosed action in {context}"))),
                _ => {}
            }
            cmds.push(self.command(context)?);
            self.skip_space();
            if self.peek_kind() == Some(Kind::Pipe) {
                self.pos += 1;
                self.skip_space();
                if matches!(self.peek_kind(), Some(Kind::RightDelim | Kind::RightParen)) {
                    return Err(self.error("missing command after |"));
                }
            }
        }
        if cmds.is_empty() {
            return Err(self.error(format!("missing value for {context}")));
        }
        for (i, c) in cmds.iter().enumerate().skip(1) {
            if let Some(
                Arg::Bool(_) | Arg::Dot | Arg::Nil | Arg::Int(_) | Arg::Float(_) | Arg::Str(_),
            ) = c.args.first()
            {
                return Err(self.error(format!(
                    "non executable command in pipeline stage {}",
                    i + 1
                )));
            }
        }
        for name in &decl {
            if is_assign {
                if !self.vars.contains(name) {
                    return Err(self.error(format!("undefined variable {name:?}")));
                }
            } else {
                self.vars.push(name.clone());
            }
        }
        Ok(Pipe {
            pos,
            is_assign,
            decl,
            cmds,
        })
    }

    fn command(&mut self, context: &str) -> Result<Command, String> {
        let mut args = Vec::new();
        loop {
            self.skip_space();
            match self.peek_kind() {
                None => return Err(self.error(format!("unclosed action in {context}"))),
                Some(Kind::RightDelim | Kind::Pipe) => break,
                Some(Kind::RightParen) if context == "parenthesized pipeline" => break,
                _ => {}
            }
            let had_space = args.is_empty() || self.tokens[self.pos - 1].kind == Kind::Space;
            if !had_space {
                let t = self.peek().cloned();
                return Err(self.error(format!(
                    "missing space? unexpected {} in operand",
                    t.as_ref().map_or("EOF".into(), quote_token)
                )));
            }
            args.push(self.operand()?);
        }
        if args.is_empty() {
            return Err(self.error(format!("missing value for {context}")));
        }
        Ok(Command { args })
    }

    fn operand(&mut self) -> Result<Arg, String> {
        let t = self.next()?;
        let arg = match t.kind {
            Kind::Field => Arg::Field(vec![t.text[1..].to_string()]),
            Kind::Variable => {
                if !self.vars.contains(&t.text) {
                    return Err(self.error(format!("undefined variable {:?}", t.text)));
                }
                Arg::Variable(t.text, Vec::new())
            }
            Kind::Dot => Arg::Dot,
            Kind::Nil => Arg::Nil,
            Kind::Bool => Arg::Bool(t.text == "true"),
            Kind::Str | Kind::RawStr => Arg::Str(unquote(&t.text).map_err(|e| self.error(e))?),
            Kind::Char => Arg::Int(char_value(&t.text).map_err(|e| self.error(e))?),
            Kind::Number => number(&t.text).map_err(|e| self.error(e))?,
            Kind::Identifier => {
                if !self.funcs.has(&t.text) {
                    return Err(self.error(format!("function {:?} not defined", t.text)));
                }
                Arg::Function(t.text)
            }
            Kind::LeftParen => {
                self.nest()?;
                let pipe = self.pipeline("parenthesized pipeline")?;
                self.depth -= 1;
                Arg::Pipe(pipe)
            }
            _ => return Err(self.error(format!("unexpected {} in operand", quote_token(&t)))),
        };
        // Fields right after an operand (no space) chain onto it.
        let mut fields = Vec::new();
        while self.peek_kind() == Some(Kind::Field) {
            fields.push(self.next()?.text[1..].to_string());
        }
        if fields.is_empty() {
            return Ok(arg);
        }
        Ok(match arg {
            Arg::Field(mut f) => {
                f.extend(fields);
                Arg::Field(f)
            }
            Arg::Variable(v, _) => Arg::Variable(v, fields),
            Arg::Dot => return Err(self.error("unexpected . after term \".\"")),
            Arg::Nil | Arg::Bool(_) | Arg::Int(_) | Arg::Float(_) | Arg::Str(_) => {
                return Err(self.error("unexpected field after a constant"));
            }
            other => Arg::Chain(Box::new(other), fields),
        })
    }
}

fn quote_token(t: &Token) -> String {
    match t.kind {
        Kind::RightDelim => "\"}}\"".into(),
        Kind::Space => "space".into(),
        _ => format!("{:?}", t.text),
    }
}

/// Go's `strconv.Unquote` for "..." (escapes) and `...` (raw).
pub(super) fn unquote(text: &str) -> Result<String, String> {
    if let Some(raw) = text.strip_prefix('`') {
        return Ok(raw.trim_end_matches('`').to_string());
    }
    let body = &text[1..text.len() - 1];
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = chars.next().ok_or("invalid syntax")?;
        match e {
            'n' => out.push('\n'),
            't' => out.push('\t'),
            'r' => out.push('\r'),
            'a' => out.push('\x07'),
            'b' => out.push('\x08'),
            'f' => out.push('\x0c'),
            'v' => out.push('\x0b'),
            '\\' | '"' | '\'' => out.push(e),
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = chars.by_ref().take(n).collect();
                let v =
                    u32::from_str_radix(&hex, 16).map_err(|_| format!("invalid syntax: {text}"))?;
                out.push(char::from_u32(v).ok_or_else(|| format!("invalid syntax: {text}"))?);
            }
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let v = u32::from_str_radix(&format!("{e}{rest}"), 8)
                    .map_err(|_| format!("invalid syntax: {text}"))?;
                out.push(char::from_u32(v).ok_or_else(|| format!("invalid syntax: {text}"))?);
            }
            other => return Err(format!("invalid syntax: unknown escape \\{other}")),
        }
    }
    Ok(out)
}

fn char_value(text: &str) -> Result<i64, String> {
    let inner = format!("\"{}\"", &text[1..text.len() - 1]);
    let s = unquote(&inner)?;
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => Ok(c as i64),
        _ => Err(format!("malformed character constant: {text}")),
    }
}

/// A number literal: an integer unless written with `.`/an exponent, as Go's
/// template constants behave when passed to `interface{}` parameters.
fn number(text: &str) -> Result<Arg, String> {
    let bad = || format!("bad number syntax: {text:?}");
    let clean = text.replace('_', "");
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, clean.strip_prefix('+').unwrap_or(&clean)),
    };
    let lower = digits.to_ascii_lowercase();
    let radix_int = [("0x", 16), ("0o", 8), ("0b", 2)]
        .iter()
        .find_map(|(p, r)| lower.strip_prefix(p).map(|d| (d.to_string(), *r)));
    let int = match &radix_int {
        Some((d, r)) if !(*r == 16 && d.contains('p')) => i64::from_str_radix(d, *r).ok(),
        Some(_) => None,
        None if lower.len() > 1
            && lower.starts_with('0')
            && lower.chars().all(|c| c.is_ascii_digit()) =>
        {
            i64::from_str_radix(&lower[1..], 8).ok()
        }
        None => lower.parse::<i64>().ok(),
    };
    if let Some(i) = int {
        return Ok(Arg::Int(if neg { -i } else { i }));
    }
    if radix_int.is_some() || !lower.contains(['.', 'e']) && lower.parse::<f64>().is_err() {
        return Err(bad());
    }
    let f: f64 = lower.parse().map_err(|_| bad())?;
    Ok(Arg::Float(if neg { -f } else { f }))
}

/// Definitions by name: later ones replace earlier ones, except that an empty
/// body never replaces a non-empty one (Go's `associate`).
pub(super) fn add_definitions(defs: &mut BTreeMap<String, Arc<Tree>>, trees: Vec<Tree>) {
    for tree in trees {
        let empty = tree
            .root
            .iter()
            .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()));
        if empty && defs.contains_key(&tree.name) {
            continue;
        }
        defs.insert(tree.name.clone(), Arc::new(tree));
    }
}
