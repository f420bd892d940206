use proptest::prelude::*;

use super::*;

fn name(text: &str) -> DnsName {
    DnsName::new(text).unwrap()
}

#[track_caller]
fn assert_selects(selector: &FqdnSelector, accept: &[&str], reject: &[&str]) {
    for n in accept {
        assert!(selector.matches(&name(n)), "{selector} rejects {n}");
    }
    for n in reject {
        assert!(!selector.matches(&name(n)), "{selector} accepts {n}");
    }
}

/// The cases of Cilium's `TestAnchoredMatchPatternMatching` (names that are
/// not DNS names, such as "" or "..io.", cannot be built and are left out).
#[test]
fn patterns_match_as_ciliums_matchpattern() {
    for (pattern, accept, reject) in [
        (
            "cilium.io.",
            &["cilium.io."][..],
            &[
                "anysub.cilium.io.",
                "anysub.ci.io.",
                "anysub.ciliumandmore.io.",
            ][..],
        ),
        (
            "*.cilium.io.",
            &["anysub.cilium.io."],
            &[
                "cilium.io.",
                "anysub.ci.io.",
                "anysub.ciliumandmore.io.",
                "a.b.cilium.io.",
            ],
        ),
        (
            "*.ci*.io.",
            &[
                "anysub.cilium.io.",
                "anysub.ci.io.",
                "anysub.ciliumandmore.io.",
            ],
            &["ci.io", "cilium.io.", "service.namesace.svc.cluster.local."],
        ),
        (
            "*",
            &[
                ".",
                "io.",
                "cilium.io.",
                "svc.cluster.local.",
                "_foobar._tcp.cilium.io.",
            ],
            &[],
        ),
        (
            "_foobar._tcp.cilium.io.",
            &["_foobar._tcp.cilium.io."],
            &["_tcp.cilium.io.", "cilium.io."],
        ),
        (
            "*.*.cilium.io.",
            &["_foobar._tcp.cilium.io."],
            &["a.cilium.io."],
        ),
        (
            "**.cilium.io.",
            &[
                "anysub.cilium.io.",
                "_foobar._tcp.cilium.io.",
                "sub11.sub22.sub33._foobar._tcp.cilium.io.",
            ],
            &["cilium.io.", "anysub.ci.io.", "anysub.ciliumandmore.io."],
        ),
        (
            "**.ci*.io.",
            &[
                "anysub.cilium.io.",
                "anysub.ci.io.",
                "1.anysub.ciliumandmore.io.",
            ],
            &["cilium.io."],
        ),
        (
            "**.*.io.",
            &["anysub.cilium.io.", "service.namesace.svc.ciuster.io."],
            &["io.", "cilium.io."],
        ),
        (
            "**",
            &[".", "io.", "cilium.io.", "_foobar._tcp.cilium.io."],
            &[],
        ),
        ("**.", &[".", "io.", "cilium.io."], &[]),
        ("*.", &[".", "io.", "a.b.c."], &[]),
        (
            "1.**.*io.",
            &["1.anything.io."],
            &["1._foobar._tcp.cilium.io.", "2.anything.io."],
        ),
        // The API's doc comment says `*cilium.io` also matches subdomains;
        // its regular expression (`^[C]*cilium[.]io[.]$`) does not.
        (
            "*cilium.io",
            &["cilium.io.", "mycilium.io."],
            &["www.cilium.io.", "io."],
        ),
        (
            "sub*.cilium.io",
            &["sub.cilium.io.", "subdomain.cilium.io."],
            &["www.cilium.io.", "cilium.io."],
        ),
        (
            "*.backup.example.net",
            &["eu.backup.example.net."],
            &["backup.example.net.", "a.eu.backup.example.net."],
        ),
        (
            "A*.EXAMPLE.com",
            &["ab.example.com.", "a.example.com."],
            &["b.example.com."],
        ),
        (
            "a*b*c.x",
            &["abc.x.", "aXbYc.x.", "abbbc.x.", "abcbc.x."],
            &["ab.x.", "acb.x.", "abcd.x."],
        ),
    ] {
        let selector = FqdnSelector::match_pattern(pattern).unwrap();
        assert_selects(&selector, accept, reject);
    }
}

#[test]
fn names_match_themselves_in_any_case() {
    let selector = FqdnSelector::match_name("API.example.com").unwrap();
    assert_eq!(selector.as_str(), "api.example.com.");
    assert_eq!(selector.to_string(), "matchName: api.example.com.");
    assert_selects(
        &selector,
        &["api.example.com", "Api.Example.COM."],
        &["example.com", "www.api.example.com", "api.example.co"],
    );
}

#[test]
fn patterns_are_normalized_as_cilium_sanitizes_them() {
    for (text, normalized) in [
        ("*", "*"),
        ("*.", "*."),
        ("**", "**"),
        ("*.com", "*.com."),
        ("*.Example.COM.", "*.example.com."),
    ] {
        assert_eq!(
            FqdnSelector::match_pattern(text).unwrap().as_str(),
            normalized
        );
    }
}

#[test]
fn names_with_other_octets_match_no_pattern() {
    let odd = DnsName::new("a\\032b.example.com").unwrap();
    let dotted = DnsName::new("a\\.b.example.com").unwrap();
    for pattern in ["*", "*.example.com", "**.example.com", "a*.example.com"] {
        let selector = FqdnSelector::match_pattern(pattern).unwrap();
        assert!(!selector.matches(&odd), "{pattern}");
        assert!(!selector.matches(&dotted), "{pattern}");
    }
}

#[test]
fn bad_selectors_are_refused() {
    assert_eq!(FqdnSelector::match_name(""), Err(SelectorError::Empty));
    assert!(matches!(
        FqdnSelector::match_name("*.example.com"),
        Err(SelectorError::Character { c: '*', .. })
    ));
    assert!(matches!(
        FqdnSelector::match_pattern("[a-z].com"),
        Err(SelectorError::Character { c: '[', .. })
    ));
    assert!(matches!(
        FqdnSelector::match_pattern("a..com"),
        Err(SelectorError::EmptyLabel { .. })
    ));
    let long = "a".repeat(256);
    assert_eq!(
        FqdnSelector::match_pattern(&long),
        Err(SelectorError::TooLong { len: 256 })
    );
    assert!(FqdnSelector::match_name(&long[..255]).is_ok());
}

#[test]
fn a_set_selects_what_any_of_its_selectors_selects() {
    let set: SelectorSet = [
        FqdnSelector::match_name("api.example.com").unwrap(),
        FqdnSelector::match_pattern("*.backup.example.net").unwrap(),
    ]
    .into_iter()
    .collect();
    assert!(set.matches(&name("api.example.com")));
    assert!(set.matches(&name("eu.backup.example.net")));
    assert!(!set.matches(&name("example.com")));
    assert!(SelectorSet::new().is_empty());
    assert!(!SelectorSet::new().matches(&name("example.com")));
    let mut all = set.clone();
    all.insert(FqdnSelector::match_pattern("*").unwrap());
    assert!(all.matches(&name("anything.at.all")));
    assert!(!all.matches(&DnsName::new("a\\032b").unwrap()));
}

/// Cilium's anchored regular expression of a pattern
/// (`matchpattern.ToAnchoredRegexp`), evaluated by hand over the name's
/// bytes, to compare with the label walk: `[C]` is a label character.
fn reference(pattern: &str, name: &str) -> bool {
    #[derive(Clone, Copy)]
    enum Tok {
        Lit(u8),
        Star,
        Subdomains,
    }
    fn go(toks: &[Tok], s: &[u8]) -> bool {
        match toks.first() {
            None => s.is_empty(),
            Some(Tok::Lit(c)) => s.first() == Some(c) && go(&toks[1..], &s[1..]),
            Some(Tok::Star) => (0..=s.len())
                .take_while(|&i| i == 0 || is_label_char(s[i - 1]))
                .any(|i| go(&toks[1..], &s[i..])),
            // ([C]+[.])+
            Some(Tok::Subdomains) => (1..=s.len()).any(|end| {
                s[end - 1] == b'.'
                    && s[..end]
                        .split(|&b| b == b'.')
                        .take(s[..end].iter().filter(|&&b| b == b'.').count())
                        .all(|l| !l.is_empty() && l.iter().all(|&b| is_label_char(b)))
                    && go(&toks[1..], &s[end..])
            }),
        }
    }
    let bare = pattern.strip_suffix('.').unwrap_or(pattern);
    if bare.bytes().all(|b| b == b'*') {
        return name == "."
            || name.ends_with('.')
                && name[..name.len() - 1]
                    .split('.')
                    .all(|l| !l.is_empty() && l.bytes().all(is_label_char));
    }
    let p = fully_qualified(pattern);
    let stars = p.bytes().take_while(|&b| b == b'*').count();
    let mut toks = Vec::new();
    let rest = if stars >= 2 && p.as_bytes().get(stars) == Some(&b'.') {
        toks.push(Tok::Subdomains);
        &p[stars + 1..]
    } else {
        &p[..]
    };
    for b in rest.bytes() {
        toks.push(if b == b'*' { Tok::Star } else { Tok::Lit(b) });
    }
    go(&toks, name.as_bytes())
}

fn label() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-c_-]{1,3}|\\*|[ab]\\*[bc]?").unwrap()
}

fn pattern() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(""), Just("**."), Just("*"), Just("***.")],
        proptest::collection::vec(label(), 1..4),
        any::<bool>(),
    )
        .prop_map(|(prefix, labels, dot)| {
            format!("{prefix}{}{}", labels.join("."), if dot { "." } else { "" })
        })
}

fn dns_name() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        proptest::string::string_regex("[a-cA_-]{1,3}").unwrap(),
        0..5,
    )
    .prop_map(|labels| format!("{}.", labels.join(".")))
}

proptest! {
    /// The label walk gives the answer of Cilium's regular expression.
    #[test]
    fn patterns_agree_with_ciliums_regexp(pattern in pattern(), name in dns_name()) {
        let Ok(selector) = FqdnSelector::match_pattern(&pattern) else {
            return Err(TestCaseError::reject("not a valid pattern"));
        };
        let name = DnsName::new(&name).unwrap();
        prop_assert_eq!(
            selector.matches(&name),
            reference(&pattern, name.as_str()),
            "{} on {}", pattern, name
        );
    }

    /// The policy model accepts exactly the selectors this crate compiles.
    #[test]
    fn the_policy_model_accepts_what_compiles(
        text in "[a-zA-Z0-9*._ -]{0,6}|[a-z]{250,258}",
        is_pattern in any::<bool>(),
    ) {
        let (model, compiled) = if is_pattern {
            (kvstore::values::FqdnSelector::pattern(&text), FqdnSelector::match_pattern(&text))
        } else {
            (kvstore::values::FqdnSelector::name(&text), FqdnSelector::match_name(&text))
        };
        let doc = format!(
            r#"{{"kind":"CiliumNetworkPolicy","metadata":{{"name":"p"}},"spec":{{"endpointSelector":{{}},"egress":[{{"toFQDNs":[{}]}}]}}}}"#,
            serde_json::to_string(&model).unwrap()
        );
        let accepted = kvstore::values::PolicyDocument::parse(&doc);
        prop_assert_eq!(accepted.is_ok(), compiled.is_ok(), "{:?}: {:?} vs {:?}", text, accepted.err(), compiled.err());
    }
}
