use super::*;

#[test]
fn builtin_rules_compile() {
    let set = RuleSet::builtin().expect("built-in rules compile");
    assert!(set.rules().len() >= 80, "{} rules", set.rules().len());
    // The built-in regexes compile on first use, so compile each one here.
    for spec in builtin_specs() {
        let compiled = Matcher::compile(&spec.id, &spec.regex, spec.secret_group);
        assert!(compiled.is_ok(), "{}: {:?}", spec.id, compiled.err());
    }
}

#[test]
fn builtin_rules_are_well_formed() {
    let specs = builtin_specs();
    for (index, spec) in specs.iter().enumerate() {
        assert!(
            specs[..index].iter().all(|other| other.id != spec.id),
            "duplicate id {}",
            spec.id
        );
        assert!(
            !spec.description.is_empty(),
            "{} has no description",
            spec.id
        );
        assert!(!spec.keywords.is_empty(), "{} has no keywords", spec.id);
        for keyword in &spec.keywords {
            assert_eq!(*keyword, keyword.to_ascii_lowercase(), "{}", spec.id);
        }
    }
}

#[test]
fn later_spec_replaces_same_id() {
    let mut specs = builtin_specs();
    let count = specs.len();
    specs.push(RuleSpec {
        id: "github-pat".into(),
        description: "replaced".into(),
        regex: "ghp_x".into(),
        keywords: vec!["ghp_".into()],
        entropy: 0.0,
        secret_group: None,
        validator: Validator::None,
        generic: false,
        allow: Vec::new(),
        stopwords: Vec::new(),
    });
    let set = RuleSet::from_specs(specs).expect("compiles");
    assert_eq!(set.rules().len(), count);
    let rule = set.rules().iter().find(|r| r.id == "github-pat");
    assert_eq!(rule.map(|r| r.description.as_str()), Some("replaced"));
}

#[test]
fn invalid_secret_group_is_rejected() {
    let spec = RuleSpec {
        id: "broken".into(),
        description: String::new(),
        regex: "a(b)".into(),
        keywords: Vec::new(),
        entropy: 0.0,
        secret_group: Some(2),
        validator: Validator::None,
        generic: false,
        allow: Vec::new(),
        stopwords: Vec::new(),
    };
    let error = Rule::compile(&spec).expect_err("group 2 does not exist");
    assert!(
        error.to_string().contains("group 2 does not exist"),
        "{error}"
    );
}

#[test]
fn invalid_regex_names_rule() {
    let specs = vec![RuleSpec {
        id: "unclosed".into(),
        description: String::new(),
        regex: "(abc".into(),
        keywords: Vec::new(),
        entropy: 0.0,
        secret_group: None,
        validator: Validator::None,
        generic: false,
        allow: Vec::new(),
        stopwords: Vec::new(),
    }];
    let error = RuleSet::from_specs(specs).expect_err("invalid regex");
    assert!(error.to_string().contains("\"unclosed\""), "{error}");
}

/// Returns the lines of every corpus file, the positive and negative ones.
fn corpus_lines() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut lines = Vec::new();
    for directory in ["positive", "negative"] {
        let entries = std::fs::read_dir(root.join(directory)).expect("corpus directory");
        for entry in entries {
            let data = std::fs::read(entry.expect("corpus entry").path()).expect("corpus file");
            lines.extend(data.split(|&byte| byte == b'\n').map(<[u8]>::to_vec));
        }
    }
    lines
}

/// Builds assignment-like lines from names, operators, spacing and values
/// around the limits of the generic regex, from a fixed seed.
fn generated_assignment_lines(count: usize) -> Vec<Vec<u8>> {
    const NAMES: [&str; 8] = [
        "key",
        "API_KEY",
        "x.db_Password",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_token",
        "CREDENTIALS_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "my-secret-",
        "pwd",
        "keyword",
    ];
    const OPERATORS: [&str; 7] = ["=", ":=", ":", "=>", "||=", "==", "-"];
    const SPACES: [&str; 5] = ["", " ", "\t", "   ", "    "];
    const QUOTES: [&str; 5] = ["", "\"", "'", "`", "]"];
    const VALUES: [&str; 6] = [
        "q8Vd2LmX0pRt",
        "q8Vd2LmX0pR",
        "Zk29xQ+/_-.=~!@#%^&*?Lm",
        "&q8Vd2LmX0pRt7",
        "q8Vd2LmX0pRt7WzKq8Vd2LmX0pRt7WzKq8Vd2LmX0pRt7WzK",
        "short",
    ];
    let mut state: u64 = 0x5eed;
    let mut pick = |len: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % len as u64) as usize
    };
    (0..count)
        .map(|_| {
            let parts = [
                SPACES[pick(SPACES.len())],
                NAMES[pick(NAMES.len())],
                QUOTES[pick(QUOTES.len())],
                SPACES[pick(SPACES.len())],
                OPERATORS[pick(OPERATORS.len())],
                SPACES[pick(SPACES.len())],
                QUOTES[pick(QUOTES.len())],
                VALUES[pick(VALUES.len())],
                QUOTES[pick(QUOTES.len())],
            ];
            parts.concat().into_bytes()
        })
        .collect()
}

#[test]
fn line_filter_matches_wherever_regex_matches() {
    let set = RuleSet::builtin().expect("built-in rules compile");
    let rule = set
        .rules()
        .iter()
        .find(|rule| rule.id == "generic-secret")
        .expect("generic rule exists");
    let matcher = rule.matcher();
    let filter = matcher
        .line_filter
        .as_ref()
        .expect("generic rule has a filter");
    let mut lines = corpus_lines();
    lines.extend(generated_assignment_lines(5000));
    let (mut matched, mut skipped) = (0, 0);
    for line in &lines {
        let regex_matches = matcher.regex.is_match(line);
        let filter_matches = filter.is_match(line);
        assert!(
            !regex_matches || filter_matches,
            "filter skips a matching line: {}",
            String::from_utf8_lossy(line)
        );
        matched += usize::from(regex_matches);
        skipped += usize::from(!filter_matches);
    }
    assert!(matched > 500, "only {matched} lines match the regex");
    assert!(skipped > 500, "only {skipped} lines are skipped");
}

#[test]
fn replaced_regex_drops_line_filter() {
    let mut specs = builtin_specs();
    let generic = specs
        .iter_mut()
        .find(|spec| spec.id == "generic-secret")
        .expect("generic rule exists");
    generic.regex = r"(?i)token\s*=\s*(\S{12,})".into();
    let set = RuleSet::from_specs(specs).expect("compiles");
    let rule = set.rules().iter().find(|rule| rule.id == "generic-secret");
    assert!(rule.is_some_and(|rule| rule.matcher().line_filter.is_none()));
}
