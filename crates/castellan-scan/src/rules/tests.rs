use super::*;

#[test]
fn builtin_rules_compile() {
    let set = RuleSet::builtin().expect("built-in rules compile");
    assert!(set.rules().len() >= 80, "{} rules", set.rules().len());
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
