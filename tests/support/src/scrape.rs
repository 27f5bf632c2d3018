//! A small Prometheus scraper for tests: GET over loopback TCP with std only, then a parser for
//! the text exposition (HELP/TYPE lines and samples) so tests assert on values, not substrings.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Send `method path` with `Connection: close` and read the whole response.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header/body split");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    HttpResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// Scrape `/metrics` of an agent listening on the default 127.0.0.1:9567 inside `ns`.
pub fn scrape_in(ns: &super::netns::NetNs) -> Exposition {
    let resp = ns.run_in(|| {
        http(
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 9567)),
            "GET",
            "/metrics",
        )
    });
    assert_eq!(resp.status, 200, "{}", resp.body);
    Exposition::parse(&resp.body)
}

/// One family's metadata.
#[derive(Debug, Default, Clone)]
pub struct FamilyMeta {
    pub help: Option<String>,
    pub kind: Option<String>,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, FamilyMeta>,
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    pub fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                e.families.entry(name.to_string()).or_default().help = Some(help.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
                e.families.entry(name.to_string()).or_default().kind = Some(kind.to_string());
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else {
                e.samples.push(parse_sample(line));
            }
        }
        e
    }

    /// The value of the sample `name` whose labels include all of `labels`, summed over the rest.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// [`value`](Self::value), 0 when there is no such sample (a counter not yet exported).
    pub fn value_or_zero(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
    let (series, value) = line.rsplit_once(' ').expect("sample has a value");
    let value: f64 = value
        .parse()
        .unwrap_or_else(|_| panic!("bad value: {line}"));
    let mut labels = BTreeMap::new();
    let name = match series.split_once('{') {
        Some((name, rest)) => {
            let inner = rest.strip_suffix('}').expect("closing brace");
            for pair in split_labels(inner) {
                let (k, v) = pair.split_once('=').expect("label k=v");
                labels.insert(k.to_string(), v.trim_matches('"').to_string());
            }
            name
        }
        None => series,
    };
    (name.to_string(), labels, value)
}

/// Split `a="x",b="y,z"` at commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}
