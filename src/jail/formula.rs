//! fail2ban's `bantime.formula`: a small arithmetic expression that says how
//! long the next ban of an address lasts, given how often it was banned
//! before.
//!
//! fail2ban evaluates the formula as Python. orch parses the subset such
//! formulas use — numbers, `ban.Time` (the base ban time in seconds),
//! `ban.Count` (earlier bans), `banFactor` (the increment's `factor`),
//! `+ - * / // % ** << >>`, comparisons, `and`/`or`/`not`,
//! `A if COND else B`, and the functions `math.exp`, `math.log`,
//! `math.log2`, `math.log10`, `math.sqrt`, `math.pow`, `math.floor`,
//! `math.ceil`, `min`, `max`, `abs`, `int`, `float`, `round`, plus `math.e`
//! and `math.pi` — into a tree once, when the config is checked, and
//! evaluates it with `f64`s at each ban. Nothing else is evaluated: no
//! names beyond these, no attribute access, no calls of anything else.
//!
//! This module only parses and evaluates; capping the result (maxtime) and
//! adding random time belong to the caller.

use std::fmt;

/// A parsed formula, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    source: String,
    root: Node,
}

/// Why a formula cannot be used. `column` counts characters from 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct FormulaError {
    pub column: usize,
    pub message: String,
}

/// The values a formula can read.
#[derive(Debug, Clone, Copy)]
pub struct FormulaInput {
    /// `ban.Time`: the jail's base ban time, seconds.
    pub base_seconds: f64,
    /// `ban.Count`: how many times the address was banned before.
    pub previous_bans: f64,
    /// `banFactor`: the increment's `factor` (1 when not set).
    pub factor: f64,
}

impl Formula {
    /// Parses `source`; unknown names, functions and bad syntax are errors.
    pub fn parse(source: &str) -> Result<Formula, FormulaError> {
        let tokens = tokenize(source)?;
        let mut parser = Parser {
            tokens,
            position: 0,
            end_column: source.chars().count() + 1,
        };
        let root = parser.expression()?;
        if let Some((_, column)) = parser.tokens.get(parser.position) {
            return Err(FormulaError {
                column: *column,
                message: "unexpected text after the end of the formula".to_string(),
            });
        }
        Ok(Formula {
            source: source.to_string(),
            root,
        })
    }

    /// The text the formula was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the formula. The result may be any `f64` (negative, NaN,
    /// infinite); the caller decides what such a ban time means.
    pub fn evaluate(&self, input: FormulaInput) -> f64 {
        self.root.evaluate(&input)
    }
}

impl fmt::Display for Formula {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    /// A dotted name such as `ban.Time` or `math.exp`, or a keyword.
    Name(String),
    /// An operator or bracket: `+`, `**`, `<=`, `(`, `,`…
    Symbol(&'static str),
}

const SYMBOLS: [&str; 21] = [
    "**", "//", "<<", ">>", "<=", ">=", "==", "!=", "+", "-", "*", "/", "%", "<", ">", "(", ")",
    ",", "~", "&", "|",
];

fn tokenize(source: &str) -> Result<Vec<(Token, usize)>, FormulaError> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let column = index + 1;
        let current = chars[index];
        if current.is_whitespace() {
            index += 1;
        } else if current.is_ascii_digit()
            || (current == '.' && chars.get(index + 1).is_some_and(|c| c.is_ascii_digit()))
        {
            let start = index;
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric() || chars[index] == '.')
            {
                // An exponent's sign belongs to the number: 1e-3.
                let exponent_sign = matches!(chars[index], 'e' | 'E')
                    && matches!(chars.get(index + 1), Some('+' | '-'));
                index += if exponent_sign { 2 } else { 1 };
            }
            let text: String = chars[start..index].iter().collect();
            let value = text.parse::<f64>().map_err(|_| FormulaError {
                column,
                message: format!("`{text}` is not a number"),
            })?;
            tokens.push((Token::Number(value), column));
        } else if current.is_ascii_alphabetic() || current == '_' {
            let start = index;
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric() || matches!(chars[index], '_' | '.'))
            {
                index += 1;
            }
            tokens.push((Token::Name(chars[start..index].iter().collect()), column));
        } else {
            let rest: String = chars[index..chars.len().min(index + 2)].iter().collect();
            let symbol = SYMBOLS
                .iter()
                .find(|symbol| rest.starts_with(**symbol))
                .ok_or_else(|| FormulaError {
                    column,
                    message: format!("unexpected character `{current}`"),
                })?;
            if matches!(*symbol, "~" | "&" | "|") {
                return Err(FormulaError {
                    column,
                    message: format!("the operator `{symbol}` is not supported"),
                });
            }
            tokens.push((Token::Symbol(symbol), column));
            index += symbol.len();
        }
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------
// Tree

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variable {
    BaseTime,
    PreviousBans,
    Factor,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Function {
    Exp,
    Log,
    Log2,
    Log10,
    Sqrt,
    Pow,
    Floor,
    Ceil,
    Min,
    Max,
    Abs,
    Int,
    Float,
    Round,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Binary {
    Add,
    Subtract,
    Multiply,
    Divide,
    FloorDivide,
    Remainder,
    Power,
    ShiftLeft,
    ShiftRight,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
    Equal,
    NotEqual,
    And,
    Or,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Number(f64),
    Variable(Variable),
    Negate(Box<Node>),
    Not(Box<Node>),
    Binary(Binary, Box<Node>, Box<Node>),
    Choice {
        condition: Box<Node>,
        then: Box<Node>,
        otherwise: Box<Node>,
    },
    Call(Function, Vec<Node>),
}

fn truth(value: f64) -> bool {
    value != 0.0 && !value.is_nan()
}

fn flag(value: bool) -> f64 {
    if value { 1.0 } else { 0.0 }
}

impl Node {
    fn evaluate(&self, input: &FormulaInput) -> f64 {
        match self {
            Node::Number(value) => *value,
            Node::Variable(Variable::BaseTime) => input.base_seconds,
            Node::Variable(Variable::PreviousBans) => input.previous_bans,
            Node::Variable(Variable::Factor) => input.factor,
            Node::Negate(inner) => -inner.evaluate(input),
            Node::Not(inner) => flag(!truth(inner.evaluate(input))),
            Node::Choice {
                condition,
                then,
                otherwise,
            } => {
                if truth(condition.evaluate(input)) {
                    then.evaluate(input)
                } else {
                    otherwise.evaluate(input)
                }
            }
            Node::Binary(Binary::And, left, right) => {
                let left = left.evaluate(input);
                if truth(left) {
                    right.evaluate(input)
                } else {
                    left
                }
            }
            Node::Binary(Binary::Or, left, right) => {
                let left = left.evaluate(input);
                if truth(left) {
                    left
                } else {
                    right.evaluate(input)
                }
            }
            Node::Binary(operator, left, right) => {
                apply_binary(*operator, left.evaluate(input), right.evaluate(input))
            }
            Node::Call(function, arguments) => {
                let values: Vec<f64> = arguments.iter().map(|a| a.evaluate(input)).collect();
                apply_function(*function, &values)
            }
        }
    }
}

/// Shifts as Python does on whole numbers; the amount is capped at 62 so
/// the result stays an `f64`-representable power of two.
fn shift(value: f64, amount: f64, left: bool) -> f64 {
    if !value.is_finite() || !amount.is_finite() || amount < 0.0 {
        return f64::NAN;
    }
    let factor = 2f64.powi(amount.trunc().min(1023.0) as i32);
    if left {
        value.trunc() * factor
    } else {
        (value.trunc() / factor).floor()
    }
}

fn apply_binary(operator: Binary, left: f64, right: f64) -> f64 {
    match operator {
        Binary::Add => left + right,
        Binary::Subtract => left - right,
        Binary::Multiply => left * right,
        Binary::Divide => left / right,
        Binary::FloorDivide => (left / right).floor(),
        // Python's % takes the sign of the divisor.
        Binary::Remainder => left - right * (left / right).floor(),
        Binary::Power => left.powf(right),
        Binary::ShiftLeft => shift(left, right, true),
        Binary::ShiftRight => shift(left, right, false),
        Binary::Less => flag(left < right),
        Binary::LessOrEqual => flag(left <= right),
        Binary::Greater => flag(left > right),
        Binary::GreaterOrEqual => flag(left >= right),
        Binary::Equal => flag(left == right),
        Binary::NotEqual => flag(left != right),
        // Short-circuiting operators are handled in `Node::evaluate`.
        Binary::And | Binary::Or => f64::NAN,
    }
}

fn apply_function(function: Function, values: &[f64]) -> f64 {
    let first = values.first().copied().unwrap_or(f64::NAN);
    let second = values.get(1).copied();
    match function {
        Function::Exp => first.exp(),
        Function::Log => match second {
            Some(base) => first.ln() / base.ln(),
            None => first.ln(),
        },
        Function::Log2 => first.log2(),
        Function::Log10 => first.log10(),
        Function::Sqrt => first.sqrt(),
        Function::Pow => first.powf(second.unwrap_or(f64::NAN)),
        Function::Floor => first.floor(),
        Function::Ceil => first.ceil(),
        Function::Min => values.iter().copied().fold(f64::INFINITY, f64::min),
        Function::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Function::Abs => first.abs(),
        Function::Int => first.trunc(),
        Function::Float => first,
        // Python 3 rounds halves to even.
        Function::Round => first.round_ties_even(),
    }
}

/// Names a formula may read, and functions it may call with how many
/// arguments (least, most).
fn variable(name: &str) -> Option<Variable> {
    match name {
        "ban.Time" => Some(Variable::BaseTime),
        "ban.Count" => Some(Variable::PreviousBans),
        "banFactor" => Some(Variable::Factor),
        _ => None,
    }
}

fn constant(name: &str) -> Option<f64> {
    match name {
        "math.e" => Some(std::f64::consts::E),
        "math.pi" => Some(std::f64::consts::PI),
        "True" => Some(1.0),
        "False" => Some(0.0),
        _ => None,
    }
}

fn function(name: &str) -> Option<(Function, usize, usize)> {
    Some(match name {
        "math.exp" => (Function::Exp, 1, 1),
        "math.log" => (Function::Log, 1, 2),
        "math.log2" => (Function::Log2, 1, 1),
        "math.log10" => (Function::Log10, 1, 1),
        "math.sqrt" => (Function::Sqrt, 1, 1),
        "math.pow" => (Function::Pow, 2, 2),
        "math.floor" => (Function::Floor, 1, 1),
        "math.ceil" => (Function::Ceil, 1, 1),
        "min" => (Function::Min, 1, usize::MAX),
        "max" => (Function::Max, 1, usize::MAX),
        "abs" => (Function::Abs, 1, 1),
        "int" => (Function::Int, 1, 1),
        "float" => (Function::Float, 1, 1),
        "round" => (Function::Round, 1, 1),
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Parser: Python's precedence, lowest first: `if else`, `or`, `and`, `not`,
// comparisons, shifts, `+ -`, `* / // %`, unary `-`, `**`.

/// Nesting deeper than this is refused, so a hostile config cannot
/// overflow the stack.
const MAX_DEPTH: usize = 64;

struct Parser {
    tokens: Vec<(Token, usize)>,
    position: usize,
    end_column: usize,
}

impl Parser {
    fn column(&self) -> usize {
        self.tokens
            .get(self.position)
            .map_or(self.end_column, |(_, column)| *column)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, FormulaError> {
        Err(FormulaError {
            column: self.column(),
            message: message.into(),
        })
    }

    fn peek_symbol(&self, symbol: &str) -> bool {
        matches!(self.tokens.get(self.position), Some((Token::Symbol(s), _)) if *s == symbol)
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.tokens.get(self.position), Some((Token::Name(n), _)) if n == keyword)
    }

    fn take_symbol(&mut self, symbols: &[&'static str]) -> Option<&'static str> {
        if let Some((Token::Symbol(symbol), _)) = self.tokens.get(self.position)
            && let Some(found) = symbols.iter().find(|s| *s == symbol)
        {
            self.position += 1;
            return Some(found);
        }
        None
    }

    fn expect_symbol(&mut self, symbol: &'static str) -> Result<(), FormulaError> {
        if self.take_symbol(&[symbol]).is_some() {
            Ok(())
        } else {
            self.error(format!("expected `{symbol}`"))
        }
    }

    fn expression(&mut self) -> Result<Node, FormulaError> {
        self.choice(0)
    }

    fn choice(&mut self, depth: usize) -> Result<Node, FormulaError> {
        if depth > MAX_DEPTH {
            return self.error("the formula is nested too deeply");
        }
        let then = self.or(depth)?;
        if !self.peek_keyword("if") {
            return Ok(then);
        }
        self.position += 1;
        let condition = self.or(depth)?;
        if !self.peek_keyword("else") {
            return self.error("expected `else`");
        }
        self.position += 1;
        let otherwise = self.choice(depth + 1)?;
        Ok(Node::Choice {
            condition: Box::new(condition),
            then: Box::new(then),
            otherwise: Box::new(otherwise),
        })
    }

    fn or(&mut self, depth: usize) -> Result<Node, FormulaError> {
        let mut left = self.and(depth)?;
        while self.peek_keyword("or") {
            self.position += 1;
            let right = self.and(depth)?;
            left = Node::Binary(Binary::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Node, FormulaError> {
        let mut left = self.not(depth)?;
        while self.peek_keyword("and") {
            self.position += 1;
            let right = self.not(depth)?;
            left = Node::Binary(Binary::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self, depth: usize) -> Result<Node, FormulaError> {
        if self.peek_keyword("not") {
            self.position += 1;
            return Ok(Node::Not(Box::new(self.descend(depth, Self::not)?)));
        }
        self.comparison(depth)
    }

    fn comparison(&mut self, depth: usize) -> Result<Node, FormulaError> {
        let left = self.shift(depth)?;
        let Some(symbol) = self.take_symbol(&["<", "<=", ">", ">=", "==", "!="]) else {
            return Ok(left);
        };
        let operator = match symbol {
            "<" => Binary::Less,
            "<=" => Binary::LessOrEqual,
            ">" => Binary::Greater,
            ">=" => Binary::GreaterOrEqual,
            "==" => Binary::Equal,
            _ => Binary::NotEqual,
        };
        let right = self.shift(depth)?;
        if self.peek_symbol("<") || self.peek_symbol(">") || self.peek_symbol("==") {
            return self.error("chained comparisons are not supported; use `and`");
        }
        Ok(Node::Binary(operator, Box::new(left), Box::new(right)))
    }

    /// One left-associative level: operands from `next`, operators from
    /// `table`.
    fn left_chain(
        &mut self,
        depth: usize,
        table: &[(&'static str, Binary)],
        next: fn(&mut Parser, usize) -> Result<Node, FormulaError>,
    ) -> Result<Node, FormulaError> {
        let symbols: Vec<&'static str> = table.iter().map(|(symbol, _)| *symbol).collect();
        let mut left = next(self, depth)?;
        while let Some(symbol) = self.take_symbol(&symbols) {
            let operator = table
                .iter()
                .find(|(s, _)| *s == symbol)
                .map(|(_, operator)| *operator)
                .unwrap_or(Binary::Add);
            let right = next(self, depth)?;
            left = Node::Binary(operator, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn shift(&mut self, depth: usize) -> Result<Node, FormulaError> {
        self.left_chain(
            depth,
            &[("<<", Binary::ShiftLeft), (">>", Binary::ShiftRight)],
            Self::sum,
        )
    }

    fn sum(&mut self, depth: usize) -> Result<Node, FormulaError> {
        self.left_chain(
            depth,
            &[("+", Binary::Add), ("-", Binary::Subtract)],
            Self::product,
        )
    }

    fn product(&mut self, depth: usize) -> Result<Node, FormulaError> {
        self.left_chain(
            depth,
            &[
                ("*", Binary::Multiply),
                ("/", Binary::Divide),
                ("//", Binary::FloorDivide),
                ("%", Binary::Remainder),
            ],
            Self::unary,
        )
    }

    fn unary(&mut self, depth: usize) -> Result<Node, FormulaError> {
        match self.take_symbol(&["-", "+"]) {
            Some("-") => Ok(Node::Negate(Box::new(self.descend(depth, Self::unary)?))),
            Some(_) => self.descend(depth, Self::unary),
            None => self.power(depth),
        }
    }

    fn power(&mut self, depth: usize) -> Result<Node, FormulaError> {
        let base = self.atom(depth)?;
        if self.take_symbol(&["**"]).is_some() {
            // Right-associative, and binds tighter than a unary minus on
            // its left but not on its right: -2**2 == -4, 2**-1 == 0.5.
            let exponent = self.descend(depth, Self::unary)?;
            return Ok(Node::Binary(
                Binary::Power,
                Box::new(base),
                Box::new(exponent),
            ));
        }
        Ok(base)
    }

    fn descend(
        &mut self,
        depth: usize,
        next: fn(&mut Parser, usize) -> Result<Node, FormulaError>,
    ) -> Result<Node, FormulaError> {
        if depth >= MAX_DEPTH {
            return self.error("the formula is nested too deeply");
        }
        next(self, depth + 1)
    }

    fn atom(&mut self, depth: usize) -> Result<Node, FormulaError> {
        let column = self.column();
        let Some((token, _)) = self.tokens.get(self.position).cloned() else {
            return self.error("the formula ends too early");
        };
        self.position += 1;
        match token {
            Token::Number(value) => Ok(Node::Number(value)),
            Token::Symbol("(") => {
                let inner = self.descend(depth, Self::choice)?;
                self.expect_symbol(")")?;
                Ok(inner)
            }
            Token::Symbol(symbol) => {
                self.position -= 1;
                self.error(format!("unexpected `{symbol}`"))
            }
            Token::Name(name) => {
                if self.take_symbol(&["("]).is_some() {
                    return self.call(depth, &name, column);
                }
                if let Some(variable) = variable(&name) {
                    return Ok(Node::Variable(variable));
                }
                if let Some(value) = constant(&name) {
                    return Ok(Node::Number(value));
                }
                Err(FormulaError {
                    column,
                    message: format!(
                        "unknown name `{name}` (a formula can read ban.Time, ban.Count and banFactor)"
                    ),
                })
            }
        }
    }

    fn call(&mut self, depth: usize, name: &str, column: usize) -> Result<Node, FormulaError> {
        let Some((function, least, most)) = function(name) else {
            return Err(FormulaError {
                column,
                message: format!("unknown function `{name}`"),
            });
        };
        let mut arguments = Vec::new();
        if self.take_symbol(&[")"]).is_none() {
            loop {
                arguments.push(self.descend(depth, Self::choice)?);
                if self.take_symbol(&[")"]).is_some() {
                    break;
                }
                self.expect_symbol(",")?;
            }
        }
        if arguments.len() < least || arguments.len() > most {
            return Err(FormulaError {
                column,
                message: format!(
                    "`{name}` takes {}, not {}",
                    match (least, most) {
                        (l, m) if l == m => format!("{l} argument(s)"),
                        (l, usize::MAX) => format!("at least {l} argument(s)"),
                        (l, m) => format!("{l} to {m} arguments"),
                    },
                    arguments.len()
                ),
            });
        }
        Ok(Node::Call(function, arguments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(source: &str, base: f64, count: f64, factor: f64) -> f64 {
        Formula::parse(source)
            .expect("test formula parses")
            .evaluate(FormulaInput {
                base_seconds: base,
                previous_bans: count,
                factor,
            })
    }

    #[test]
    fn fail2ban_default_formula_doubles_per_earlier_ban_up_to_twenty() {
        let default = "ban.Time * (1<<(ban.Count if ban.Count<20 else 20)) * banFactor";
        assert_eq!(eval(default, 600.0, 0.0, 1.0), 600.0);
        assert_eq!(eval(default, 600.0, 3.0, 1.0), 4800.0);
        assert_eq!(eval(default, 600.0, 3.0, 2.0), 9600.0);
        assert_eq!(eval(default, 1.0, 25.0, 1.0), (1u64 << 20) as f64);
    }

    #[test]
    fn fail2ban_exponential_example_formula() {
        // From fail2ban's jail.conf comments.
        let formula = "ban.Time * math.exp(float(ban.Count+1)*banFactor)/math.exp(1*banFactor)";
        let first = eval(formula, 600.0, 0.0, 1.0);
        assert!((first - 600.0).abs() < 1e-9);
        let third = eval(formula, 600.0, 2.0, 1.0);
        assert!((third - 600.0 * std::f64::consts::E.powi(2)).abs() < 1e-6);
    }

    #[test]
    fn precedence_follows_python() {
        assert_eq!(eval("2 + 3 * 4", 0.0, 0.0, 0.0), 14.0);
        assert_eq!(eval("-2 ** 2", 0.0, 0.0, 0.0), -4.0);
        assert_eq!(eval("2 ** -1", 0.0, 0.0, 0.0), 0.5);
        assert_eq!(eval("2 ** 3 ** 2", 0.0, 0.0, 0.0), 512.0);
        assert_eq!(eval("7 // 2 + 7 % 4", 0.0, 0.0, 0.0), 6.0);
        assert_eq!(eval("-7 % 3", 0.0, 0.0, 0.0), 2.0);
        assert_eq!(eval("1 << 2 + 1", 0.0, 0.0, 0.0), 8.0);
        assert_eq!(eval("3 if 0 else 4 if 1 else 5", 0.0, 0.0, 0.0), 4.0);
        assert_eq!(eval("not 0 and 2 or 3", 0.0, 0.0, 0.0), 2.0);
        assert_eq!(
            eval("max(1, ban.Count, 2) + min(5, 4)", 0.0, 9.0, 0.0),
            13.0
        );
        assert_eq!(eval("round(2.5) + int(-1.7)", 0.0, 0.0, 0.0), 1.0);
        assert_eq!(eval("1e3 + .5", 0.0, 0.0, 0.0), 1000.5);
    }

    #[test]
    fn errors_name_the_column_and_the_problem() {
        let error = Formula::parse("ban.Time * os.system(1)").expect_err("unknown function");
        assert_eq!(error.column, 12);
        assert!(error.message.contains("unknown function `os.system`"));
        let error = Formula::parse("ban.Time * bantime").expect_err("unknown name");
        assert_eq!(error.column, 12);
        assert!(error.message.contains("unknown name `bantime`"));
        let error = Formula::parse("ban.Time *").expect_err("ends early");
        assert_eq!(error.column, 11);
        let error = Formula::parse("(ban.Time").expect_err("unclosed");
        assert!(error.message.contains("expected `)`"));
        let error = Formula::parse("ban.Time ban.Count").expect_err("trailing");
        assert_eq!(error.column, 10);
        let error = Formula::parse("math.pow(2)").expect_err("arity");
        assert!(error.message.contains("takes 2 argument(s), not 1"));
        let error = Formula::parse("ban.Time ^ 2").expect_err("xor");
        assert!(error.message.contains("unexpected character `^`"));
        let error = Formula::parse("1 < ban.Count < 3").expect_err("chain");
        assert!(error.message.contains("chained"));
        let error = Formula::parse("1 if ban.Count").expect_err("no else");
        assert!(error.message.contains("expected `else`"));
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
        let error = Formula::parse(&deep).expect_err("too deep");
        assert!(error.message.contains("nested too deeply"));
        let minus = format!("{}1", "-".repeat(10_000));
        assert!(Formula::parse(&minus).is_err());
    }
}
