//! Tests of the flow folder as a whole: parsing, conversion, validation and
//! the bot file, through the public entry points, on a fixture that uses
//! every node kind and on the examples. One file because the cases cross
//! the modules (a document parsed, then validated, then written back); it
//! is longer than the others for that reason only.

use super::*;
use proptest::prelude::*;

/// The fixture of the brief: every node kind.
pub(crate) const FIXTURE: &str = r#"
start: welcome
error: oops
nodes:
  welcome:
    label: Welcome Message
    ask: "Welcome to EliPackage, can you enter your name, please?"
    save_as: name
    validate: { kind: text, min: 2, max: 80 }
    retry: "Please enter your name (2-80 characters)."
    notify: true
    datapoint: false
    next: membership
  membership:
    menu: "{{memory.name}}, enter the best option for streaming membership:"
    options:
      - { keyword: 1, label: One month,  notify: true, next: thanks }
      - { keyword: 2, label: Six months, notify: true, next: thanks }
      - { keyword: 3, label: One year,   notify: true, next: thanks }
      - { keyword: 4, label: Raffle,     campaign: raffle }
      - { keyword: 5, label: Weather,    webhook: weather, next: thanks }
    retry: "Please answer 1, 2, 3, 4 or 5."
  lookup: { webhook: weather, next: thanks, on_error: oops }
  price:  { quote: true, next: thanks }
  book:   { booking: "Pick a time:", offer: 3, next: thanks, cancel_keyword: cancel }
  thanks: { message: "Thank you, {{memory.name}}!", next: done }
  oops:   { message: "Sorry, something went wrong.", next: done }
  done:   { end: true }
campaigns:
  raffle:
    start: r1
    nodes:
      r1: { message: "You are in the raffle!", next: r2 }
      r2: { end: true }
"#;

/// Parses then validates, returning every error.
fn errors(yaml: &str, hooks: Option<&[String]>) -> Vec<FlowError> {
    match Flow::from_yaml(yaml) {
        Err(e) => e,
        Ok(f) => f.validate(hooks).err().unwrap_or_default(),
    }
}

fn has(errs: &[FlowError], node: &str, field: &str) -> bool {
    errs.iter().any(|e| e.node == node && e.field == field)
}

#[track_caller]
fn expect(yaml: &str, node: &str, field: &str, words: &str) {
    let errs = errors(yaml, None);
    assert!(
        errs.iter()
            .any(|e| e.node == node && e.field == field && e.message.contains(words)),
        "expected {node}/{field} ~ {words:?}, got {errs:#?}"
    );
}

#[test]
fn fixture_parses_and_round_trips() {
    let f = Flow::from_yaml(FIXTURE).unwrap();
    assert_eq!(f.main.nodes.len(), 8);
    assert_eq!(f.main.nodes[0].id, "welcome", "authoring order kept");
    assert_eq!(f.node(MAIN, "welcome").unwrap().label(), "Welcome Message");
    assert_eq!(f.node(MAIN, "thanks").unwrap().label(), "thanks");
    let FlowNode::Menu { options, .. } = &f.node(MAIN, "membership").unwrap().kind else {
        panic!()
    };
    assert_eq!(options[3].goto, Goto::Campaign("raffle".into()));
    assert_eq!(options[4].webhook.as_deref(), Some("weather"));
    assert_eq!(Flow::from_yaml(&f.to_yaml()).unwrap(), f);
    assert_eq!(Flow::from_json(&f.to_json()).unwrap(), f);
    // lookup, price and book are not linked from start in the fixture.
    let errs = f.validate(None).unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(has(&errs, "lookup", "") && has(&errs, "price", "") && has(&errs, "book", ""));
    assert_eq!(
        f.webhook_names().into_iter().collect::<Vec<_>>(),
        vec!["weather".to_string()]
    );
}

#[test]
fn display_names_node_and_field() {
    let e = FlowError::new("membership", "options[2].next", "unknown target \"thx\"");
    assert_eq!(
        e.to_string(),
        "node \"membership\", field \"options[2].next\": unknown target \"thx\""
    );
}

#[test]
fn syntax_errors_have_positions() {
    let e = Flow::from_yaml("start: a\nnodes:\n  a: { message: [unclosed\n").unwrap_err();
    assert!(e[0].message.contains("line"), "{e:?}");
    let e =
        Flow::from_json("{\"start\": \"a\",\n \"nodes\": {\"a\": {\"end\": tru}}}").unwrap_err();
    assert!(e[0].message.contains("line 2 column"), "{e:?}");
    let e = Flow::from_yaml("start: a\nnodes:\n  a: { end: true, colour: red }\n").unwrap_err();
    assert!(
        e[0].message.contains("colour") && e[0].message.contains("line"),
        "{e:?}"
    );
}

#[test]
fn missing_start() {
    expect("nodes: { a: { end: true } }", "", "start", "missing start");
    expect(
        "start: zz\nnodes: { a: { end: true } }",
        "",
        "start",
        "unknown target \"zz\"",
    );
    expect(
        "start: a\nnodes: { a: { end: true } }\ncampaigns: { c: { nodes: { x: { end: true } } } }",
        "c",
        "start",
        "missing start",
    );
}

#[test]
fn unknown_targets() {
    let y = r#"
start: m
error: nowhere
nodes:
  m:
    menu: Pick
    options:
      - { label: A, next: e }
      - { label: B, campaign: ghost }
      - { label: C, next: thx }
  w: { webhook: hook, next: e, on_error: gone }
  e: { end: true }
"#;
    let errs = errors(y, None);
    assert!(has(&errs, "m", "options[2].next"), "{errs:#?}");
    assert!(has(&errs, "m", "options[1].campaign"));
    assert!(has(&errs, "w", "on_error"));
    assert!(has(&errs, "", "error"));
    expect(
        "start: a\nnodes: { a: { message: hi, next: b } }",
        "a",
        "next",
        "unknown target \"b\"",
    );
    expect(
        "start: a\nnodes: { a: { end: true } }\ncampaigns: { c: { start: x, nodes: { x: { message: hi, next: y } } } }",
        "c/x",
        "next",
        "unknown target",
    );
}

#[test]
fn unreachable_nodes() {
    expect(
        "start: a\nnodes: { a: { end: true }, b: { end: true } }",
        "b",
        "",
        "unreachable",
    );
    // The error node counts as reachable.
    assert!(
        errors(
            "start: a\nerror: b\nnodes: { a: { end: true }, b: { end: true } }",
            None
        )
        .is_empty()
    );
}

#[test]
fn menu_problems() {
    let y = r#"
start: m
nodes:
  m:
    menu: Pick
    options:
      - { keyword: 1, label: One, next: e }
      - { keyword: 1, label: Two, next: e }
      - { keyword: 3, label: " one ", next: e }
  n: { menu: Empty, options: [] }
  e: { end: true }
"#;
    let errs = errors(y, None);
    assert!(has(&errs, "m", "options[1].keyword"), "{errs:#?}");
    assert!(has(&errs, "m", "options[2].label"));
    assert!(
        errs.iter()
            .any(|e| e.node == "n" && e.field == "options" && e.message.contains("empty menu"))
    );
}

#[test]
fn option_redirected_to_the_endpoint() {
    let y = "start: m\nnodes:\n  m:\n    menu: Pick\n    options:\n      - { keyword: 1, label: Call me, notify: true }\n      - { keyword: 2, label: Stay, next: e }\n  e: { end: true }\n";
    let f = Flow::from_yaml(y).unwrap();
    f.validate(None).unwrap();
    let FlowNode::Menu { options, .. } = &f.node(MAIN, "m").unwrap().kind else {
        panic!("not a menu");
    };
    assert_eq!(options[0].goto, Goto::Endpoint);
    assert!(options[0].notify);
    let back = Flow::from_yaml(&f.to_yaml()).unwrap();
    assert_eq!(back, f, "written back without next or campaign");
    // Without notify, or with a story webhook, the option has nowhere to go.
    expect(
        &y.replace("label: Call me, notify: true", "label: Call me"),
        "m",
        "options[0].next",
        "\"notify\": true",
    );
    expect(
        &y.replace("notify: true }", "notify: true, webhook: w }"),
        "m",
        "options[0].next",
        "story webhook needs",
    );
}

#[test]
fn missing_required_fields() {
    expect(
        "start: a\nnodes: { a: { message: hi } }",
        "a",
        "next",
        "missing required field",
    );
    expect(
        "start: a\nnodes: { a: { ask: Name?, next: b }, b: { end: true } }",
        "a",
        "save_as",
        "missing",
    );
    expect(
        "start: a\nnodes: { a: { menu: Pick } }",
        "a",
        "options",
        "missing",
    );
    expect(
        "start: a\nnodes: { a: { menu: Pick, options: [ { label: X } ] } }",
        "a",
        "options[0].next",
        "missing",
    );
    expect(
        "start: a\nnodes: { a: { menu: Pick, options: [ { next: a } ] } }",
        "a",
        "options[0].label",
        "missing",
    );
    expect(
        "start: a\nnodes: { a: { message: hi, next: a, save_as: x } }",
        "a",
        "save_as",
        "does not use",
    );
}

#[test]
fn node_kinds() {
    expect(
        "start: a\nnodes: { a: { label: Nothing, next: a } }",
        "a",
        "kind",
        "no kind",
    );
    expect(
        "start: a\nnodes: { a: { ask: Q, menu: M, save_as: x, next: a } }",
        "a",
        "kind",
        "several kinds (menu, ask)",
    );
    // `message` on an end node is its closing text, not a second kind.
    assert!(errors("start: a\nnodes: { a: { end: true, message: Bye } }", None).is_empty());
    expect(
        "start: a\nnodes: { a: { end: false } }",
        "a",
        "end",
        "end: true",
    );
}

#[test]
fn invalid_regex() {
    expect(
        "start: a\nnodes: { a: { ask: Code?, save_as: code, validate: { kind: regex, pattern: \"([a-z\" }, next: b }, b: { end: true } }",
        "a",
        "validate.pattern",
        "invalid regex",
    );
}

#[test]
fn unknown_webhooks_only_when_known_list_given() {
    let y = "start: a\nnodes:\n  a: { webhook: weather, next: m }\n  m: { menu: Pick, options: [ { label: X, webhook: crm, next: e } ] }\n  e: { end: true }\n";
    assert!(errors(y, None).is_empty());
    let known = vec!["weather".to_string()];
    let errs = errors(y, Some(&known));
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(has(&errs, "m", "options[0].webhook"));
    let errs = errors(y, Some(&[]));
    assert!(has(&errs, "a", "webhook"));
}

#[test]
fn cycles_without_input() {
    let y = r#"
start: a
nodes:
  a: { message: one, next: b }
  b: { quote: true, next: c, on_error: e }
  c: { webhook: w, next: a }
  e: { end: true }
"#;
    let errs = errors(y, None);
    let cyc: Vec<&FlowError> = errs
        .iter()
        .filter(|e| e.message.contains("cycle without input"))
        .collect();
    assert_eq!(cyc.len(), 1, "{errs:#?}");
    assert_eq!((cyc[0].node.as_str(), cyc[0].field.as_str()), ("c", "next"));
    assert!(cyc[0].message.contains("a -> b -> c -> a"));
    // A cycle through an ask is fine.
    let ok = "start: a\nnodes:\n  a: { message: one, next: q }\n  q: { ask: Again?, save_as: x, next: a }\n";
    assert!(errors(ok, None).is_empty());
    expect(
        "start: a\nnodes: { a: { message: loop, next: a } }",
        "a",
        "next",
        "cycle without input",
    );
}

#[test]
fn ids_limits_and_texts() {
    expect(
        "start: bad id\nnodes: { bad id: { end: true } }",
        "bad id",
        "id",
        "node ids",
    );
    let long = "x".repeat(MAX_TEXT + 1);
    expect(
        &format!("start: a\nnodes: {{ a: {{ message: {long}, next: e }}, e: {{ end: true }} }}"),
        "a",
        "message",
        "longer than",
    );
    let mut y = String::from("start: n0\nnodes:\n");
    for i in 0..MAX_NODES {
        y.push_str(&format!("  n{i}: {{ message: hi, next: n{} }}\n", i + 1));
    }
    y.push_str(&format!("  n{MAX_NODES}: {{ end: true }}\n"));
    let errs = errors(&y, None);
    assert!(errs[0].message.contains("more than 500 nodes"), "{errs:?}");
    expect(
        "start: a\nnodes: { a: { ask: Q, save_as: quote, next: a } }",
        "a",
        "save_as",
        "reserved",
    );
    expect(
        "start: a\nnodes: { a: { booking: Pick, offer: 0, next: a } }",
        "a",
        "offer",
        "offer between",
    );
}

#[test]
fn reports_all_problems_at_once() {
    let y = "start: a\nnodes:\n  a: { message: hi, next: nowhere }\n  b: { end: true }\n  c: { menu: M, options: [] }\n";
    let errs = errors(y, None);
    assert!(errs.len() >= 4, "{errs:#?}");
}

#[test]
fn branches_compile_with_columns() {
    let y = r#"
start: a
nodes:
  a:
    message: hi
    next:
      - if: memory.size >= 10 && usr.plan == "vip"
        then: b
      - if: "memory.size >"
        then: b
      - else: b
  b: { end: true }
"#;
    let errs = errors(y, None);
    let e0 = errs
        .iter()
        .find(|e| e.field == "next[0].if")
        .expect("unknown root");
    assert_eq!((e0.node.as_str(), e0.column), ("a", Some(22)));
    assert!(
        e0.message.contains("unknown name \"usr\" at column 22"),
        "{e0:?}"
    );
    let e1 = errs
        .iter()
        .find(|e| e.field == "next[1].if")
        .expect("syntax");
    assert!(
        e1.column.is_some() && e1.message.contains("syntax error at column"),
        "{e1:?}"
    );
    expect(
        "start: a\nnodes:\n  a: { message: hi, next: [ { if: 'memory.x == 1', then: b } ] }\n  b: { end: true }\n",
        "a",
        "next",
        "must end with - else",
    );
    expect(
        "start: a\nnodes:\n  a: { message: hi, next: [ { else: b }, { if: 'memory.x == 1', then: b } ] }\n  b: { end: true }\n",
        "a",
        "next[0].else",
        "last branch",
    );
    expect(
        "start: a\nnodes:\n  a: { message: hi, next: [ { if: 'memory.x == 1', then: zz }, { else: b } ] }\n  b: { end: true }\n",
        "a",
        "next[0].then",
        "unknown target \"zz\"",
    );
}

#[test]
fn branches_count_for_reachability_and_cycles() {
    // c is reachable only through a branch; d is not reachable at all.
    let y = r#"
start: a
nodes:
  a: { message: hi, next: [ { if: "memory.x == 1", then: c }, { else: b } ] }
  b: { end: true }
  c: { end: true }
  d: { end: true }
"#;
    let errs = errors(y, None);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(has(&errs, "d", ""));
    // A loop of set nodes and branches never waits.
    let y = r#"
start: a
nodes:
  a: { set: { memory.n: "1" }, next: s }
  s: { set: { memory.n: "memory.n + 1" }, next: [ { if: "memory.n < 5", then: a }, { else: e } ] }
  e: { end: true }
"#;
    let errs = errors(y, None);
    assert!(
        errs.iter().any(|e| e.node == "s"
            && e.field == "next[0].then"
            && e.message.contains("cycle without input")),
        "{errs:#?}"
    );
}

#[test]
fn set_keywords_and_timers_are_checked() {
    expect(
        "start: a\nnodes:\n  a: { set: { memory.quote: \"1\" }, next: b }\n  b: { end: true }\n",
        "a",
        "set.memory.quote",
        "reserved",
    );
    expect(
        "start: a\nnodes:\n  a: { set: { score: \"1\" }, next: b }\n  b: { end: true }\n",
        "a",
        "set.score",
        "memory.KEY or user.KEY",
    );
    expect(
        "start: a\nnodes:\n  a: { set: { memory.s: \"memory.s +\" }, next: b }\n  b: { end: true }\n",
        "a",
        "set.memory.s",
        "syntax error",
    );
    expect(
        "start: a\nkeywords: { menu: nowhere }\nnodes: { a: { end: true } }\n",
        "keywords",
        "menu",
        "unknown target \"nowhere\"",
    );
    expect(
        "start: a\nnodes:\n  a: { ask: Q, save_as: q, timeout: 10m, on_timeout: gone, next: b }\n  b: { end: true }\n",
        "a",
        "on_timeout",
        "unknown target \"gone\"",
    );
    expect(
        "start: a\nnodes:\n  a: { ask: Q, save_as: q, timeout: 10 minutes, on_timeout: b, next: b }\n  b: { end: true }\n",
        "a",
        "timeout",
        "not a duration",
    );
    expect(
        "start: a\nnodes:\n  a: { ask: Q, save_as: q, reminder: Hello?, next: b }\n  b: { end: true }\n",
        "a",
        "remind_after",
        "needs remind_after",
    );
    expect(
        "start: a\nnodes:\n  a: { message: hi, image: \"ftp://x/y.png\", next: b }\n  b: { end: true }\n",
        "a",
        "image",
        "https://",
    );
    expect(
        "start: a\nnodes:\n  a: { end: true, timeout: 1m }\n",
        "a",
        "timeout",
        "does not use",
    );
    // A node reachable only through a keyword or an on_timeout is reachable.
    let ok = "start: a\nkeywords: { help: h }\nnodes:\n  a: { ask: Q, save_as: q, timeout: 1h, on_timeout: t, next: b }\n  b: { end: true }\n  h: { message: help, next: a }\n  t: { end: true }\n";
    assert!(errors(ok, None).is_empty(), "{:#?}", errors(ok, None));
    let f = Flow::from_yaml(ok).unwrap();
    assert_eq!(Flow::from_yaml(&f.to_yaml()).unwrap(), f, "round trip");
    assert_eq!(Span::parse("24h").unwrap().to_string(), "1d");
    assert_eq!(Span::parse("90m").unwrap().seconds, 5400);
    assert!(Span::parse("0s").is_err() && Span::parse("400d").is_err());
}

const EXAMPLES: [(&str, &str); 7] = [
    ("leads", include_str!("../../../examples/leads.yaml")),
    ("helpdesk", include_str!("../../../examples/helpdesk.yaml")),
    (
        "elipackage",
        include_str!("../../../examples/elipackage.yaml"),
    ),
    ("incident", include_str!("../../../examples/incident.yaml")),
    ("quote", include_str!("../../../examples/quote.yaml")),
    (
        "appointment",
        include_str!("../../../examples/appointment.yaml"),
    ),
    ("support", include_str!("../../../examples/support.yaml")),
];

#[test]
fn examples_parse_and_validate() {
    for (name, src) in EXAMPLES {
        let bot = BotFile::from_yaml(src).unwrap_or_else(|e| panic!("{name}: {}", join_errors(&e)));
        assert_eq!(bot.id.as_str(), name);
        bot.validate()
            .unwrap_or_else(|e| panic!("{name}: {}", join_errors(&e)));
        let again = BotFile::from_json(&bot.to_json()).unwrap();
        assert_eq!(again, bot, "{name} JSON round trip");
        assert_eq!(
            BotFile::from_yaml(&bot.to_yaml()).unwrap(),
            bot,
            "{name} YAML round trip"
        );
    }
}

#[test]
fn bot_file_checks_config() {
    let src = EXAMPLES[4]
        .1
        .replace("type: quote_generation", "type: quotes");
    // The type is a BotType: an unknown one is refused when the file is read.
    let errs = BotFile::from_yaml(&src).unwrap_err();
    assert!(
        errs[0].message.contains("quotes") && errs[0].message.contains("quote_generation"),
        "{errs:#?}"
    );
    // The id follows BotId's rule, the same as the API's.
    let src = EXAMPLES[4].1.replace("id: quote", "id: Quote_Bot");
    let errs = BotFile::from_yaml(&src).unwrap().validate().unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.node == "bot" && e.field == "id" && e.message.contains("a-z, 0-9 and '-'")),
        "{errs:#?}"
    );
    let mut bot = BotFile::from_yaml(EXAMPLES[5].1).unwrap();
    bot.calendar = None;
    assert!(has(&bot.validate().unwrap_err(), "calendar", ""));
}

#[test]
fn hostile_documents_are_errors() {
    for src in [
        "[".repeat(100_000),
        "{a: ".repeat(50_000),
        "a: &x [1]\nb: *x\n".into(),
        String::new(),
        "- 1\n".into(),
    ] {
        let t = std::time::Instant::now();
        assert!(Flow::from_yaml(&src).is_err());
        assert!(
            t.elapsed().as_secs() < 2,
            "{} bytes took {:?}",
            src.len(),
            t.elapsed()
        );
    }
    assert!(Flow::from_json(&"{\"nodes\": ".repeat(50_000)).is_err());
    assert!(
        Flow::from_yaml(&"x".repeat(MAX_SOURCE + 1)).unwrap_err()[0]
            .message
            .contains("larger")
    );
    assert!(
        Flow::from_yaml(&"[".repeat(100)).unwrap_err()[0]
            .message
            .contains("nested")
    );
    // Unknown fields inside a validation are rejected too.
    let e = Flow::from_yaml(
        "start: a\nnodes: { a: { ask: Q, save_as: x, validate: { kind: email, min: 2 }, next: a } }",
    );
    assert!(e.is_err(), "{e:?}");
}

proptest! {
    #[test]
    fn parser_never_panics(s in "(start|nodes|message|menu|ask|end|next|options|:|\\{|\\}|\\[|\\]|-|,| |\\n|[a-z0-9]|\"|&|\\*|!){0,200}") {
        if let Ok(f) = Flow::from_yaml(&s) {
            let _ = f.validate(None);
            let _ = f.to_yaml();
        }
        let _ = Flow::from_json(&s);
        let _ = BotFile::from_yaml(&s);
    }

    #[test]
    fn parser_never_panics_on_any_text(s in "\\PC{0,300}") {
        let _ = Flow::from_yaml(&s);
    }
}

/// Every YAML example of docs/FLOWS.md parses: whole flows are validated,
/// node snippets are parsed inside a flow (their targets are elsewhere), so
/// a condition, a duration or a field that the docs get wrong fails here.
#[test]
fn the_docs_examples_parse() {
    let doc = include_str!("../../../docs/FLOWS.md");
    let mut blocks = 0;
    for block in doc.split("```yaml\n").skip(1) {
        let yaml = block.split("```").next().unwrap_or_default();
        blocks += 1;
        if yaml.starts_with("start:") {
            let f = Flow::from_yaml(yaml).unwrap_or_else(|e| panic!("{}\n{yaml}", join_errors(&e)));
            f.validate(None)
                .unwrap_or_else(|e| panic!("{}\n{yaml}", join_errors(&e)));
        } else if yaml.starts_with("keywords:") {
            let wrapped = format!("start: a\n{yaml}nodes: {{ a: {{ end: true }} }}\n");
            Flow::from_yaml(&wrapped).unwrap_or_else(|e| panic!("{}\n{yaml}", join_errors(&e)));
        } else {
            let indented: String = yaml.lines().map(|l| format!("  {l}\n")).collect();
            let wrapped = format!("start: a\nnodes:\n{indented}");
            Flow::from_yaml(&wrapped).unwrap_or_else(|e| panic!("{}\n{yaml}", join_errors(&e)));
        }
    }
    assert!(blocks >= 7, "{blocks} examples");
}

#[test]
fn a_bot_file_reports_its_flow_errors_by_node_field_and_column() {
    let src = include_str!("../../../examples/leads.yaml").replace(
        "memory.score >= 70",
        "memory.score >= 70 && usr.plan == 'vip'",
    );
    let errs = BotFile::from_yaml(&src).unwrap_err();
    assert_eq!(
        (
            errs[0].node.as_str(),
            errs[0].field.as_str(),
            errs[0].column
        ),
        ("score", "next[0].if", Some(23)),
        "{errs:#?}"
    );
    let bot = BotFile::from_yaml(include_str!("../../../examples/leads.yaml")).unwrap();
    let json = bot
        .to_json()
        .replace("memory.score >= 70", "memory.score >=");
    let errs = BotFile::from_json(&json).unwrap_err();
    assert_eq!(
        (errs[0].node.as_str(), errs[0].field.as_str()),
        ("score", "next[0].if"),
        "{errs:#?}"
    );
    assert!(errs[0].column.is_some(), "{errs:#?}");
    // Errors outside the flow keep their one line.
    let errs = BotFile::from_yaml("id: x\nname: X\ntype: support\ncolour: red\nflow: { start: a, nodes: { a: { end: true } } }\n").unwrap_err();
    assert!(errs[0].message.contains("colour"), "{errs:#?}");
}
