//! The principal of an mTLS client, as Kafka names it: the subject of its
//! certificate in RFC 2253 form (what Java's `X500Principal.getName()`
//! gives, e.g. `CN=alice,OU=payments,O=Example,C=DE`), then Kafka's
//! `ssl.principal.mapping.rules`:
//!
//! ```text
//! --ssl-principal-mapping-rules 'RULE:^CN=(.*?),OU=(.*?),.*$/$1@$2/L,DEFAULT'
//!   CN=Alice,OU=Payments,O=Example  -->  User:alice@payments
//!   anything else                   -->  User:<the whole subject>  (DEFAULT)
//! ```
//!
//! Rules are tried in order; a rule's pattern must match the whole subject.
//! When none matches (and there is no DEFAULT), the client is refused.

use regex::Regex;
use x509_cert::Certificate;
use x509_cert::der::{self, Decode, Encode, Tag, Tagged};

/// The subject of a DER certificate in RFC 2253 form.
pub fn subject_rfc2253(cert_der: &[u8]) -> Result<String, String> {
    let cert =
        Certificate::from_der(cert_der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut out = String::new();
    // RFC 2253 writes the last RDN of the sequence first.
    for (i, rdn) in cert.tbs_certificate.subject.0.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.0.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.oid.to_string();
            match keyword(&oid) {
                Some(k) => {
                    out.push_str(k);
                    out.push('=');
                    match string_value(&atv.value) {
                        Some(s) => escape_into(&mut out, &s),
                        None => hex_into(&mut out, &atv.value)?,
                    }
                }
                None => {
                    out.push_str(&oid);
                    out.push('=');
                    hex_into(&mut out, &atv.value)?;
                }
            }
        }
    }
    Ok(out)
}

/// The attribute types RFC 2253 names by keyword; others are written as
/// their OID with the value in hex.
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// The value of a directory string, if it is one.
fn string_value(value: &der::Any) -> Option<String> {
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString => {
            // Teletex is read as Latin-1, as Java does.
            if value.tag() == Tag::Utf8String {
                std::str::from_utf8(bytes).ok().map(str::to_owned)
            } else {
                Some(bytes.iter().map(|&b| b as char).collect())
            }
        }
        Tag::BmpString => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

/// `#` and the hex of the value's whole DER encoding (RFC 2253 2.4).
fn hex_into(out: &mut String, value: &der::Any) -> Result<(), String> {
    let der = value
        .to_der()
        .map_err(|e| format!("cannot encode an attribute value: {e}"))?;
    out.push('#');
    for b in der {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(())
}

/// RFC 2253 2.4 as Java writes it: `,=+<>#;"\\` escaped wherever they
/// are, and every space of a leading or trailing run of them.
fn escape_into(out: &mut String, s: &str) {
    let chars: Vec<char> = s.chars().collect();
    let lead = chars.iter().take_while(|&&c| c == ' ').count();
    let trail = chars.len() - chars.iter().rev().take_while(|&&c| c == ' ').count();
    for (i, &c) in chars.iter().enumerate() {
        let special = matches!(c, ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\')
            || (c == ' ' && (i < lead || i >= trail));
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Kafka's `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
pub struct PrincipalRules(Vec<Rule>);

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Map {
        /// The pattern as given: what is replaced, every match of it.
        pattern: Regex,
        /// The same, anchored: the rule applies if it matches the whole
        /// subject.
        whole: Regex,
        replacement: String,
        case: Case,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

impl Default for PrincipalRules {
    fn default() -> Self {
        Self(vec![Rule::Default])
    }
}

impl std::str::FromStr for PrincipalRules {
    type Err = String;

    /// `RULE:pattern/replacement/[L|U]` and `DEFAULT`, separated by commas
    /// (a comma inside a rule's pattern belongs to it); `/` inside a
    /// pattern or replacement is written `\/`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        let mut rest = s.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| format!("rule {rest:?}: no / after the pattern"))?;
                let (replacement, after) = until_slash(after)
                    .ok_or_else(|| format!("rule {rest:?}: no / after the replacement"))?;
                let (case, after) = match after.chars().next() {
                    Some('L') => (Case::Lower, &after[1..]),
                    Some('U') => (Case::Upper, &after[1..]),
                    _ => (Case::Keep, after),
                };
                let bad = |e: regex::Error| format!("rule pattern {pattern:?}: {e}");
                let whole = Regex::new(&format!("^(?:{pattern})$")).map_err(bad)?;
                let compiled = Regex::new(&pattern).map_err(bad)?;
                let groups = compiled.captures_len() - 1;
                rules.push(Rule::Map {
                    replacement: java_replacement(&replacement, groups)
                        .map_err(|e| format!("rule {rest:?}: {e}"))?,
                    pattern: compiled,
                    whole,
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "{rest:?} is neither RULE:pattern/replacement/[LU] nor DEFAULT"
                ));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("expected a comma before {rest:?}")),
            }
        }
        if rules.is_empty() {
            return Err("no rules (DEFAULT keeps the whole subject)".into());
        }
        Ok(Self(rules))
    }
}

/// Up to the first `/` not escaped as `\/`: the text (unescaped) and what
/// follows the slash.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &s[i + 1..])),
            _ => out.push(c),
        }
    }
    None
}

/// A Kafka rule's replacement (Java's `$1` references) for the regex
/// crate, where `$1a` would name group "1a": `${1}`. As Kafka does, a
/// reference past the pattern's `groups` drops its last digits until it
/// names one (`$12` with one group is `$1` and "2"), and one that names
/// none stays literal text; with no groups at all a reference is an error
/// (Kafka fails every connection the rule matches).
fn java_replacement(r: &str, groups: usize) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                if groups == 0 {
                    return Err(format!(
                        "${digits} refers to a group, but the pattern has none"
                    ));
                }
                // Leading digits naming a group; the rest is text.
                let mut n = digits.len();
                while n > 1 && digits[..n].parse::<usize>().map_or(true, |g| g > groups) {
                    n -= 1;
                }
                match digits[..n].parse::<usize>() {
                    Ok(g) if (1..=groups).contains(&g) || digits.starts_with('0') => {
                        out.push_str(&format!("${{{}}}", &digits[..n]));
                        out.push_str(&digits[n..]);
                    }
                    _ => {
                        out.push_str("$$");
                        out.push_str(&digits);
                    }
                }
            }
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some('$') => out.push_str("$$"),
                Some(escaped) => out.push(escaped),
                None => out.push('\\'),
            },
            _ => out.push(c),
        }
    }
    Ok(out)
}

impl PrincipalRules {
    /// The principal name for `subject`, or `None` when no rule matches.
    pub fn apply(&self, subject: &str) -> Option<String> {
        for rule in &self.0 {
            match rule {
                Rule::Default => return Some(subject.to_owned()),
                Rule::Map {
                    pattern,
                    whole,
                    replacement,
                    case,
                } => {
                    if whole.is_match(subject) {
                        // Kafka replaces every match of the pattern.
                        let out = pattern
                            .replace_all(subject, replacement.as_str())
                            .into_owned();
                        return Some(match case {
                            Case::Keep => out,
                            Case::Lower => out.to_lowercase(),
                            Case::Upper => out.to_uppercase(),
                        });
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_map_like_kafkas() {
        let rules: PrincipalRules =
            r"RULE:^CN=(.*?),OU=(.*?),O=(.*?)$/$1@$2/L, RULE:^CN=([^,]*)\/x,.*$/$1/U ,DEFAULT"
                .parse()
                .unwrap();
        assert_eq!(
            rules.apply("CN=Alice,OU=Payments,O=Example").as_deref(),
            Some("alice@payments")
        );
        assert_eq!(rules.apply("CN=bob/x,O=Example").as_deref(), Some("BOB"));
        assert_eq!(
            rules.apply("CN=carol,O=Example").as_deref(),
            Some("CN=carol,O=Example")
        );
        // Without DEFAULT nothing else is named.
        let strict: PrincipalRules = "RULE:^CN=(.*?),O=Example$/$1/".parse().unwrap();
        assert_eq!(strict.apply("CN=dave,O=Example").as_deref(), Some("dave"));
        assert_eq!(strict.apply("CN=dave,O=Other"), None);
        // The pattern matches the whole subject, not a part of it.
        let partial: PrincipalRules = "RULE:CN=(.*?),/$1/".parse().unwrap();
        assert_eq!(partial.apply("CN=erin,O=Example"), None);
        assert_eq!(
            PrincipalRules::default().apply("CN=x").as_deref(),
            Some("CN=x")
        );
        for bad in [
            "",
            "RULE:^CN=.*$",
            "RULE:^CN=.*$/$1",
            "SOMETHING",
            "RULE:([/x/",
        ] {
            assert!(bad.parse::<PrincipalRules>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn java_group_references() {
        assert_eq!(java_replacement("$1@$2x", 2).unwrap(), "${1}@${2}x");
        assert_eq!(java_replacement(r"\$1 costs $", 1).unwrap(), "$$1 costs $$");
        // Past the groups: digits drop until one is named, else literal.
        assert_eq!(java_replacement("$12", 1).unwrap(), "${1}2");
        assert_eq!(java_replacement("$4", 2).unwrap(), "$$4");
        assert!(java_replacement("$1", 0).is_err());
        assert_eq!(java_replacement("plain", 0).unwrap(), "plain");
        let rules: PrincipalRules = "RULE:^CN=(.*)$/$12/".parse().unwrap();
        assert_eq!(rules.apply("CN=x").as_deref(), Some("x2"));
        assert!("RULE:^CN=.*$/$1/".parse::<PrincipalRules>().is_err());
    }
}
