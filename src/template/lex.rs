//! Go's text/template lexer: text, actions between `{{` and `}}`, trim markers
//! (`{{- ` and ` -}}`, the space is required), comments (`{{/* */}}`), and the
//! tokens inside actions.

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Text,
    LeftDelim,
    RightDelim,
    Space,
    Identifier,
    Keyword,
    Field,
    Variable,
    Str,
    RawStr,
    Char,
    Number,
    Bool,
    Nil,
    Dot,
    Declare,
    Assign,
    Pipe,
    LeftParen,
    RightParen,
    Comma,
}

/// One token; `text` is the source text (unquoted later by the parser).
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub kind: Kind,
    pub text: String,
    /// 1-based line and column where it starts.
    pub line: usize,
    pub col: usize,
    /// Byte offset in the source, for error snippets.
    pub offset: usize,
}

const KEYWORDS: &[&str] = &[
    "block", "break", "continue", "define", "else", "end", "if", "range", "template", "with",
];

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    tokens: Vec<Token>,
}

/// Splits `src` into tokens; the error is Go's message with its line.
pub(super) fn lex(src: &str) -> Result<Vec<Token>, (usize, String)> {
    let mut lx = Lexer {
        src,
        pos: 0,
        tokens: Vec::new(),
    };
    lx.run()?;
    Ok(lx.tokens)
}

impl Lexer<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.src[..offset];
        let line = before.matches('\n').count() + 1;
        let col = offset - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        (line, col)
    }

    fn push(&mut self, kind: Kind, start: usize, end: usize) {
        let (line, col) = self.line_col(start);
        self.tokens.push(Token {
            kind,
            text: self.src[start..end].to_string(),
            line,
            col,
            offset: start,
        });
    }

    fn err<T>(&self, offset: usize, msg: impl Into<String>) -> Result<T, (usize, String)> {
        Err((self.line_col(offset).0, msg.into()))
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn run(&mut self) -> Result<(), (usize, String)> {
        let mut trim_leading = false;
        while self.pos < self.src.len() {
            let Some(found) = self.rest().find("{{") else {
                let start = self.skip_space_if(trim_leading, self.pos);
                if start < self.src.len() {
                    self.push(Kind::Text, start, self.src.len());
                }
                self.pos = self.src.len();
                break;
            };
            let delim = self.pos + found;
            let after = &self.src[delim + 2..];
            let trim_before = after.starts_with('-') && after[1..].starts_with(is_space);
            let start = self.skip_space_if(trim_leading, self.pos);
            let mut end = delim;
            if trim_before {
                end = self.src[..delim]
                    .trim_end_matches(is_space)
                    .len()
                    .max(start);
            }
            if start < end {
                self.push(Kind::Text, start, end);
            }
            self.pos = delim + 2;
            if trim_before {
                self.pos += 1;
            }
            trim_leading = self.action(delim)?;
        }
        Ok(())
    }

    fn skip_space_if(&self, trim: bool, from: usize) -> usize {
        if trim {
            self.src.len() - self.src[from..].trim_start_matches(is_space).len()
        } else {
            from
        }
    }

    /// Is the text at `pos` a right delimiter, with its trim marker? Returns
    /// the delimiter's length and whether it trims.
    fn right_delim_at(&self, pos: usize) -> Option<(usize, bool)> {
        let s = &self.src[pos..];
        if s.starts_with("}}") {
            return Some((2, false));
        }
        let mut chars = s.chars();
        let first = chars.next()?;
        if is_space(first) && chars.as_str().starts_with("-}}") {
            return Some((first.len_utf8() + 3, true));
        }
        None
    }

    /// Lexes one action after its `{{`; returns whether it trims the text after it.
    fn action(&mut self, delim: usize) -> Result<bool, (usize, String)> {
        self.push(Kind::LeftDelim, delim, delim + 2);
        // A comment must follow the delimiter (and its trim marker) at once.
        let lead = self.rest().len() - self.rest().trim_start_matches(is_space).len();
        if self.rest()[lead..].starts_with("/*")
            && (lead == 0 || self.src[delim + 2..].starts_with('-'))
        {
            let body = self.pos + lead + 2;
            let Some(close) = self.src[body..].find("*/") else {
                return self.err(delim, "unclosed comment");
            };
            let after = body + close + 2;
            self.tokens.pop();
            return match self.right_delim_at(after) {
                Some((len, trim)) => {
                    self.pos = after + len;
                    Ok(trim)
                }
                None => self.err(delim, "comment ends before closing delimiter"),
            };
        }
        let mut depth = 0usize;
        loop {
            if let Some((len, trim)) = self.right_delim_at(self.pos) {
                if depth > 0 {
                    return self.err(self.pos, "unclosed left paren");
                }
                let start = if trim { self.pos + len - 3 } else { self.pos };
                if trim {
                    self.push(Kind::Space, self.pos, start);
                }
                self.push(Kind::RightDelim, start, self.pos + len);
                self.pos += len;
                return Ok(trim);
            }
            let Some(c) = self.rest().chars().next() else {
                return self.err(delim, "unclosed action");
            };
            let start = self.pos;
            match c {
                c if is_space(c) => {
                    let n = self.rest().len() - self.rest().trim_start_matches(is_space).len();
                    // " -}}" ends the action: leave its space for the delimiter.
                    let mut end = start + n;
                    if self.src[end..].starts_with("-}}") {
                        end -= self.src[start..end]
                            .chars()
                            .last()
                            .map_or(0, char::len_utf8);
                    }
                    if end > start {
                        self.push(Kind::Space, start, end);
                    }
                    self.pos = end;
                    if end == start {
                        continue;
                    }
                }
                '=' => {
                    self.pos += 1;
                    self.push(Kind::Assign, start, self.pos);
                }
                ':' => {
                    if !self.rest().starts_with(":=") {
                        return self.err(start, "expected :=");
                    }
                    self.pos += 2;
                    self.push(Kind::Declare, start, self.pos);
                }
                '|' => {
                    self.pos += 1;
                    self.push(Kind::Pipe, start, self.pos);
                }
                ',' => {
                    self.pos += 1;
                    self.push(Kind::Comma, start, self.pos);
                }
                '(' => {
                    depth += 1;
                    self.pos += 1;
                    self.push(Kind::LeftParen, start, self.pos);
                }
                ')' => {
                    if depth == 0 {
                        return self.err(start, "unexpected right paren");
                    }
                    depth -= 1;
                    self.pos += 1;
                    self.push(Kind::RightParen, start, self.pos);
                }
                '"' => self.quoted(start, '"', Kind::Str, "unterminated quoted string")?,
                '\'' => self.quoted(start, '\'', Kind::Char, "unterminated character constant")?,
                '`' => {
                    let Some(close) = self.src[start + 1..].find('`') else {
                        return self.err(start, "unterminated raw quoted string");
                    };
                    self.pos = start + 1 + close + 1;
                    self.push(Kind::RawStr, start, self.pos);
                }
                '$' => {
                    self.pos += 1 + self.alnum_len(self.pos + 1);
                    self.push(Kind::Variable, start, self.pos);
                }
                '.' => {
                    let next = self.src[start + 1..].chars().next();
                    if next.is_some_and(|c| c.is_ascii_digit()) {
                        self.number(start)?;
                    } else {
                        let n = self.alnum_len(start + 1);
                        self.pos = start + 1 + n;
                        self.push(
                            if n == 0 { Kind::Dot } else { Kind::Field },
                            start,
                            self.pos,
                        );
                    }
                }
                '+' | '-' | '0'..='9' => self.number(start)?,
                c if is_alnum(c) => {
                    self.pos += self.alnum_len(start);
                    let word = &self.src[start..self.pos];
                    let kind = match word {
                        "true" | "false" => Kind::Bool,
                        "nil" => Kind::Nil,
                        w if KEYWORDS.contains(&w) => Kind::Keyword,
                        _ => Kind::Identifier,
                    };
                    self.push(kind, start, self.pos);
                }
                other => {
                    return self.err(
                        start,
                        format!("unrecognized character in action: {other:?}"),
                    );
                }
            }
        }
    }

    fn alnum_len(&self, from: usize) -> usize {
        let s = &self.src[from..];
        s.len() - s.trim_start_matches(is_alnum).len()
    }

    fn quoted(
        &mut self,
        start: usize,
        quote: char,
        kind: Kind,
        msg: &str,
    ) -> Result<(), (usize, String)> {
        let mut chars = self.src[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' if chars.next().is_none_or(|(_, c)| c == '\n') => {
                    return self.err(start, msg);
                }
                '\n' => return self.err(start, msg),
                c if c == quote => {
                    self.pos = start + 1 + i + 1;
                    self.push(kind, start, self.pos);
                    return Ok(());
                }
                _ => {}
            }
        }
        self.err(start, msg)
    }

    fn number(&mut self, start: usize) -> Result<(), (usize, String)> {
        let s = &self.src[start..];
        let len = s
            .char_indices()
            .find(|&(i, c)| {
                let prev = s[..i].chars().last();
                let sign_ok = (c == '+' || c == '-')
                    && (i == 0
                        || matches!(prev, Some('e' | 'E' | 'p' | 'P')) && !s.starts_with("0x"));
                !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || sign_ok)
            })
            .map_or(s.len(), |(i, _)| i);
        let text = &s[..len];
        if text == "+" || text == "-" {
            return self.err(start, format!("bad number syntax: {text:?}"));
        }
        self.pos = start + len;
        self.push(Kind::Number, start, self.pos);
        Ok(())
    }
}
