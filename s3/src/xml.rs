//! Reading the few XML documents S3 answers with.
//!
//! [`walk`] calls back with the element path and the text of every closing
//! element, with entities resolved. Each parser below picks the paths it needs.

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::store::ListEntry;

/// Calls `f(path, text)` at the end of every element.
pub(crate) fn walk(xml: &str, mut f: impl FnMut(&[String], &str)) -> Result<(), String> {
    let mut reader = Reader::from_str(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(e) => {
                path.push(e.local_name().as_ref().to_owned());
                text.clear();
            }
            Event::End(_) => {
                f(&path, &text);
                path.pop();
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.xml_content(quick_xml::XmlVersion::Implicit1_0)),
            Event::CData(t) => text.push_str(&t.into_inner()),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
                    text.push(c);
                } else {
                    let name = r.into_inner();
                    let c = match name.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        other => return Err(format!("unknown XML entity &{other};")),
                    };
                    text.push(c);
                }
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

fn at(path: &[String], want: &[&str]) -> bool {
    path.len() == want.len() && path.iter().zip(want).all(|(a, b)| a == b)
}

/// `<Error><Code/><Message/><RequestId/></Error>`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ErrorBody {
    pub code: String,
    pub message: String,
    pub request_id: String,
}

pub(crate) fn error_body(xml: &str) -> Option<ErrorBody> {
    let mut out = ErrorBody::default();
    let mut seen = false;
    walk(xml, |p, t| {
        if at(p, &["Error", "Code"]) {
            out.code = t.to_owned();
            seen = true;
        } else if at(p, &["Error", "Message"]) {
            out.message = t.to_owned();
        } else if at(p, &["Error", "RequestId"]) {
            out.request_id = t.to_owned();
        }
    })
    .ok()?;
    seen.then_some(out)
}

/// One page of ListObjectsV2.
#[derive(Debug, Default)]
pub(crate) struct ListPage {
    pub entries: Vec<ListEntry>,
    pub next_token: Option<String>,
}

pub(crate) fn list_page(xml: &str) -> Result<ListPage, String> {
    let mut page = ListPage::default();
    let mut cur = ListEntry::default();
    let mut truncated = false;
    let mut parse_err = None;
    walk(xml, |p, t| match p {
        [r, c, f] if r == "ListBucketResult" && c == "Contents" => match f.as_str() {
            "Key" => cur.key = t.to_owned(),
            "Size" => match t.parse() {
                Ok(n) => cur.size = n,
                Err(_) => parse_err = Some(format!("bad Size {t:?}")),
            },
            "ETag" => cur.etag = t.trim_matches('"').to_owned(),
            "LastModified" => cur.last_modified = t.to_owned(),
            _ => {}
        },
        [r, c] if r == "ListBucketResult" && c == "Contents" => {
            page.entries.push(std::mem::take(&mut cur))
        }
        [r, f] if r == "ListBucketResult" && f == "IsTruncated" => truncated = t == "true",
        [r, f] if r == "ListBucketResult" && f == "NextContinuationToken" => {
            page.next_token = Some(t.to_owned())
        }
        _ => {}
    })?;
    if let Some(e) = parse_err {
        return Err(e);
    }
    if !truncated {
        page.next_token = None;
    } else if page.next_token.is_none() {
        return Err("IsTruncated is true but there is no NextContinuationToken".into());
    }
    Ok(page)
}

pub(crate) fn upload_id(xml: &str) -> Option<String> {
    let mut id = None;
    walk(xml, |p, t| {
        if at(p, &["InitiateMultipartUploadResult", "UploadId"]) {
            id = Some(t.to_owned());
        }
    })
    .ok()?;
    id
}

/// Keys that DeleteObjects reported as failed, with code and message.
pub(crate) fn delete_errors(xml: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut cur = (String::new(), String::new(), String::new());
    walk(xml, |p, t| match p {
        [r, e, f] if r == "DeleteResult" && e == "Error" => match f.as_str() {
            "Key" => cur.0 = t.to_owned(),
            "Code" => cur.1 = t.to_owned(),
            "Message" => cur.2 = t.to_owned(),
            _ => {}
        },
        [r, e] if r == "DeleteResult" && e == "Error" => out.push(std::mem::take(&mut cur)),
        _ => {}
    })?;
    Ok(out)
}

/// Escapes text for an XML element body.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_list_pages_with_entities() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>
<Contents><Key>a&amp;b/x</Key><Size>12</Size><ETag>&quot;abc&quot;</ETag><LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>
<Contents><Key>c</Key><Size>0</Size></Contents>
<IsTruncated>true</IsTruncated><NextContinuationToken>tok/+=</NextContinuationToken></ListBucketResult>"#;
        let page = list_page(xml).unwrap();
        assert_eq!(page.entries.len(), 2);
        assert_eq!(page.entries[0].key, "a&b/x");
        assert_eq!(page.entries[0].size, 12);
        assert_eq!(page.entries[0].etag, "abc");
        assert_eq!(page.next_token.as_deref(), Some("tok/+="));
    }

    #[test]
    fn reads_errors() {
        let xml = "<Error><Code>NoSuchBucket</Code><Message>gone</Message><RequestId>r1</RequestId></Error>";
        let e = error_body(xml).unwrap();
        assert_eq!(
            (e.code.as_str(), e.message.as_str(), e.request_id.as_str()),
            ("NoSuchBucket", "gone", "r1")
        );
        assert_eq!(error_body("not xml <"), None);
        assert!(
            list_page("<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>")
                .is_err()
        );
    }
}
