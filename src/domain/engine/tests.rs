//! The engine's tests: conversations driven turn by turn through [`step`],
//! [`resume_after_webhook`] and [`on_timer`], every event checked against
//! its schema. Longer than the other files because each case is a short
//! transcript; they share one driver (`Chat`).

use super::*;
use crate::domain::event::tests::assert_valid;
use crate::domain::flow::tests::FIXTURE;
use chrono::TimeZone;
use proptest::prelude::*;

fn contact() -> Contact {
    let mut attributes = Map::new();
    attributes.insert("age".into(), json!(41));
    Contact {
        id: "ct_1".into(),
        phone: Some("+525500000000".into()),
        external_id: None,
        attributes,
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 11, 23, 12, 0, 0).unwrap()
}

fn slots(n: usize) -> Vec<Slot> {
    let cal: Calendar = serde_yaml_ng::from_str(
        "{ timezone: Europe/Madrid, slot_minutes: 30, hours: { mon: [\"09:00-12:00\"], tue: [\"09:00-12:00\"] } }",
    )
    .unwrap();
    cal.slots_between(now(), n)
}

/// A conversation driven step by step; checks every event against its schema.
struct Chat {
    flow: Flow,
    state: State,
    contact: Contact,
    free: Vec<Slot>,
    table: Option<PriceTable>,
    calendar: Option<Calendar>,
}

impl Chat {
    fn new(yaml: &str) -> Chat {
        Chat {
            flow: Flow::from_yaml(yaml).unwrap(),
            state: State::new(),
            contact: contact(),
            free: slots(6),
            table: None,
            calendar: serde_yaml_ng::from_str(
                "{ timezone: Europe/Madrid, slot_minutes: 30, hours: { mon: [\"09:00-12:00\"] } }",
            )
            .ok(),
        }
    }

    fn turn_with(&mut self, text: &str, taken: Option<DateTime<Utc>>, commit: bool) -> Turn {
        let ctx = Context {
            conversation_id: "cv_1",
            contact: &self.contact,
            now: now(),
            price_table: self.table.as_ref(),
            calendar: self.calendar.as_ref(),
            free_slots: &self.free,
            taken_slot: taken,
            channel: "api",
        };
        let t = step(&self.flow, &self.state, &ctx, Input::Text(text));
        check(&t);
        if commit {
            self.commit(&t);
        }
        t
    }

    /// Keeps the turn's state and merges its attribute changes, as the runtime does.
    fn commit(&mut self, t: &Turn) {
        self.state = t.state.clone();
        for (k, v) in &t.user_attributes {
            if v.is_null() {
                self.contact.attributes.remove(k);
            } else {
                self.contact.attributes.insert(k.clone(), v.clone());
            }
        }
    }

    /// Fires a timer at `now() + minutes`.
    fn timer(&mut self, kind: TimerKind, node: Option<&str>, minutes: i64) -> Turn {
        let ctx = Context {
            conversation_id: "cv_1",
            contact: &self.contact,
            now: now() + chrono::Duration::minutes(minutes),
            price_table: self.table.as_ref(),
            calendar: self.calendar.as_ref(),
            free_slots: &self.free,
            taken_slot: None,
            channel: "api",
        };
        let t = on_timer(&self.flow, &self.state, &ctx, kind, node);
        check(&t);
        self.commit(&t);
        t
    }

    fn send(&mut self, text: &str) -> Turn {
        self.turn_with(text, None, true)
    }

    fn resume(&mut self, result: Result<WebhookReply, String>) -> Turn {
        let ctx = Context {
            conversation_id: "cv_1",
            contact: &self.contact,
            now: now(),
            price_table: self.table.as_ref(),
            calendar: self.calendar.as_ref(),
            free_slots: &self.free,
            taken_slot: None,
            channel: "api",
        };
        let t = resume_after_webhook(&self.flow, &self.state, &ctx, result);
        check(&t);
        self.state = t.state.clone();
        t
    }
}

fn check(t: &Turn) {
    for e in &t.events {
        assert_valid(e);
    }
}

fn types(t: &Turn) -> Vec<&'static str> {
    t.events.iter().map(|e| e.event_type.as_str()).collect()
}

fn event(t: &Turn, ty: EventType) -> &Value {
    &t.events
        .iter()
        .find(|e| e.event_type == ty)
        .unwrap_or_else(|| panic!("no {ty} in {:?}", types(t)))
        .data
}

#[test]
fn elipackage_transcript() {
    let mut c = Chat::new(FIXTURE);
    let t = c.send("hi");
    assert_eq!(types(&t), ["conversation.started", "message.received"]);
    assert_eq!(
        event(&t, EventType::ConversationStarted)["node"],
        Value::Null
    );
    assert_eq!(
        t.replies,
        ["Welcome to EliPackage, can you enter your name, please?"]
    );
    assert_eq!(c.state.node.as_deref(), Some("welcome"));

    let t = c.send("J");
    assert_eq!(types(&t), ["message.received"]);
    assert_eq!(t.replies, ["Please enter your name (2-80 characters)."]);
    assert_eq!(c.state.node.as_deref(), Some("welcome"));

    let t = c.send("John Doe");
    assert_eq!(types(&t), ["message.received", "response.received"]);
    let r = event(&t, EventType::ResponseReceived);
    assert_eq!(
        (
            r["response"].as_str(),
            r["field"].as_str(),
            r["label"].as_str()
        ),
        (Some("John Doe"), Some("name"), Some("Welcome Message"))
    );
    assert_eq!(r["contact"]["phone"], json!("+525500000000"));
    assert_eq!(
        t.replies,
        [
            "John Doe, enter the best option for streaming membership:\n1. One month\n2. Six months\n3. One year\n4. Raffle\n5. Weather"
        ]
    );
    assert_eq!(
        t.quick_replies,
        ["One month", "Six months", "One year", "Raffle", "Weather"]
    );
    assert_eq!(c.state.memory["name"], json!("John Doe"));

    let t = c.send("one  MONTH");
    assert_eq!(
        types(&t),
        [
            "message.received",
            "option.selected",
            "conversation.completed"
        ]
    );
    let o = event(&t, EventType::OptionSelected);
    assert_eq!(
        (o["option"].clone(), o["keyword"].clone()),
        (json!("One month"), json!(1))
    );
    assert_eq!(o["node"], json!("membership"));
    assert_eq!(t.replies, ["Thank you, John Doe!"]);
    assert!(t.ended && c.state.completed);

    // A completed conversation is the caller's job.
    let t = c.send("hello again");
    assert!(t.ended && t.events.is_empty() && t.replies.is_empty());
}

fn at_menu() -> Chat {
    let mut c = Chat::new(FIXTURE);
    c.send("hi");
    c.send("Ana Gómez");
    c
}

#[test]
fn menu_by_number_label_and_invalid() {
    let mut c = at_menu();
    let t = c.send("7");
    assert_eq!(types(&t), ["message.received"]);
    assert_eq!(
        t.replies[0],
        "Please answer 1, 2, 3, 4 or 5.\n1. One month\n2. Six months\n3. One year\n4. Raffle\n5. Weather"
    );
    assert_eq!(t.quick_replies.len(), 5);
    assert_eq!(c.state.node.as_deref(), Some("membership"));
    let t = c.send(" 2 ");
    assert_eq!(
        event(&t, EventType::OptionSelected)["option"],
        json!("Six months")
    );
    assert!(t.ended);

    let mut c = at_menu();
    let t = c.send("ONE year");
    assert_eq!(event(&t, EventType::OptionSelected)["keyword"], json!(3));
}

#[test]
fn campaign_redirect() {
    let mut c = at_menu();
    let t = c.send("raffle");
    assert_eq!(
        types(&t),
        ["message.received", "conversation.completed"],
        "raffle has no notify"
    );
    assert_eq!(t.replies, ["You are in the raffle!"]);
    assert_eq!(c.state.flow, "raffle");
    assert_eq!(
        event(&t, EventType::ConversationCompleted)["flow"],
        json!("raffle")
    );
    assert_eq!(
        event(&t, EventType::ConversationCompleted)["node"],
        json!("r2")
    );
}

const ASKS: &str = r#"
start: email
nodes:
  email: { ask: "Email?", save_as: email, validate: { kind: email }, datapoint: true, next: phone }
  phone: { ask: "Phone?", save_as: phone, validate: { kind: phone }, datapoint: true, notify: true, next: qty }
  qty: { ask: "How many, {{user.age}}?", save_as: qty, validate: { kind: number, min: 1, max: 10, integer: true }, next: when }
  when: { ask: "When?", save_as: when, validate: { kind: date }, next: size }
  size: { ask: "Size?", save_as: size, validate: { kind: choice, options: [Small, Large] }, next: code }
  code: { ask: "Code?", save_as: code, validate: { kind: regex, pattern: "[A-Z]{3}" }, next: note }
  note: { ask: "Anything else?", save_as: note, next: done }
  done: { end: true, message: "Saved {{memory.email}} {{memory.phone}} {{memory.qty}} {{memory.when}} {{memory.size}} {{memory.code}} {{memory.note}}" }
"#;

#[test]
fn ask_kinds_and_datapoints() {
    let mut c = Chat::new(ASKS);
    c.send("hi");
    let t = c.send("not an email");
    assert!(
        t.replies[0].starts_with("Sorry, it must be an e-mail address")
            && t.replies[0].ends_with("Email?"),
        "{:?}",
        t.replies
    );
    let t = c.send("Ana@Example.com");
    assert_eq!(types(&t), ["message.received", "datapoint.collected"]);
    assert_eq!(
        event(&t, EventType::DatapointCollected)["value"],
        json!("Ana@example.com")
    );
    let t = c.send("+52 55 0000 0000");
    assert_eq!(
        types(&t),
        [
            "message.received",
            "response.received",
            "datapoint.collected"
        ]
    );
    assert_eq!(
        event(&t, EventType::DatapointCollected)["value"],
        json!("+525500000000")
    );
    assert_eq!(
        event(&t, EventType::ResponseReceived)["response"],
        json!("+52 55 0000 0000")
    );
    assert_eq!(
        t.replies,
        ["How many, 41?"],
        "user attributes in merge tags"
    );
    assert_eq!(c.send("11").replies.len(), 1);
    assert_eq!(c.state.node.as_deref(), Some("qty"));
    c.send("3");
    assert!(c.send("31/02/2025").replies[0].starts_with("Sorry"));
    c.send("28/02/2025");
    c.send(" large ");
    assert!(c.send("abcd").replies[0].starts_with("Sorry"));
    c.send("ABC");
    let t = c.send("  no thanks ");
    assert_eq!(
        t.replies,
        ["Saved Ana@example.com +525500000000 3 2025-02-28 Large ABC no thanks"]
    );
    assert!(t.ended);
}

const QUOTE: &str = r#"
start: product
error: oops
nodes:
  product: { ask: "Which box?", save_as: product, next: qty }
  qty: { ask: "How many?", save_as: qty, validate: { kind: number, min: 1, integer: true }, next: price }
  price: { quote: true, next: show }
  show: { message: "Total {{quote.total}} {{quote.currency}} (tax {{quote.tax}}) until {{quote.valid_until}}", next: done }
  oops: { message: "Let us try again.", next: product }
  done: { end: true }
"#;

fn table() -> PriceTable {
    serde_yaml_ng::from_str(
        "{ currency: MXN, tax_rate: \"0.16\", validity_days: 10, item_from: product, items: [ { key: small, name: Small box, unit_price: \"12.50\", quantity_from: qty } ] }",
    )
    .unwrap()
}

#[test]
fn quote_node() {
    let mut c = Chat::new(QUOTE);
    c.table = Some(table());
    c.send("hi");
    c.send("small box");
    let t = c.send("2");
    assert_eq!(
        types(&t),
        [
            "message.received",
            "quote.generated",
            "conversation.completed"
        ]
    );
    assert_eq!(
        event(&t, EventType::QuoteGenerated)["quote"]["total"],
        json!("29.00")
    );
    assert_eq!(t.replies, ["Total 29.00 MXN (tax 4.00) until 2025-12-03"]);
    assert_eq!(c.state.memory["quote"]["subtotal"], json!("25.00"));

    // Pricing error: polite reason, then the flow's error node.
    let mut c = Chat::new(QUOTE);
    c.table = Some(table());
    c.send("hi");
    c.send("boat");
    let t = c.send("1");
    assert_eq!(types(&t), ["message.received"]);
    assert_eq!(
        t.replies,
        [
            "Sorry, we could not prepare your quote: we do not sell \"boat\".",
            "Let us try again.",
            "Which box?"
        ]
    );

    // No price table at all.
    let mut c = Chat::new(QUOTE);
    c.send("hi");
    c.send("small");
    let t = c.send("1");
    assert!(
        t.replies[0].contains("no prices are set up"),
        "{:?}",
        t.replies
    );
}

const BOOKING: &str = r#"
start: book
nodes:
  book: { booking: "Pick a time:", offer: 3, next: ok, cancel_keyword: cancel }
  ok: { message: "Booked {{appointment.label}} ({{appointment.timezone}}).", next: again }
  again: { booking: "Another?", offer: 2, next: done, cancel_keyword: Cancel, on_error: done }
  done: { end: true }
"#;

#[test]
fn booking_offer_claim_taken_and_cancel() {
    let mut c = Chat::new(BOOKING);
    let t = c.send("hi");
    assert_eq!(
        t.replies,
        ["Pick a time:\n1. Mon 24 Nov 09:00\n2. Mon 24 Nov 09:30\n3. Mon 24 Nov 10:00"]
    );
    assert_eq!(
        t.quick_replies,
        ["Mon 24 Nov 09:00", "Mon 24 Nov 09:30", "Mon 24 Nov 10:00"]
    );

    // Choice by number; the store refuses it, so the caller retries with taken_slot.
    let first = c.turn_with("2", None, false);
    let claim = first.booking.clone().unwrap();
    assert_eq!(claim.label, "Mon 24 Nov 09:30");
    assert_eq!(types(&first), ["message.received", "appointment.booked"]);
    let t = c.turn_with("2", Some(claim.start), true);
    assert_eq!(
        types(&t),
        ["message.received"],
        "no booking event for a taken slot"
    );
    assert!(t.booking.is_none());
    assert_eq!(
        t.replies,
        [
            "Sorry, Mon 24 Nov 09:30 was just taken. Please choose another time.",
            "Pick a time:\n1. Mon 24 Nov 09:00\n2. Mon 24 Nov 10:00\n3. Mon 24 Nov 10:30"
        ]
    );
    c.free.retain(|s| s.start != claim.start);

    // Choice by label.
    let t = c.send("mon 24 nov 10:30");
    let claim = t.booking.clone().unwrap();
    assert_eq!(
        claim.start,
        "2025-11-24T09:30:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    let apt = &event(&t, EventType::AppointmentBooked)["appointment"];
    assert_eq!(apt["start"], json!("2025-11-24T09:30:00Z"));
    assert_eq!(apt["timezone"], json!("Europe/Madrid"));
    assert_eq!(apt["id"], json!(claim.id));
    assert_eq!(t.replies[0], "Booked Mon 24 Nov 10:30 (Europe/Madrid).");
    assert_eq!(c.state.memory["appointment"], *apt);
    c.free.retain(|s| s.start != claim.start);

    // Invalid answer re-offers.
    let t = c.send("tomorrow");
    assert_eq!(
        t.replies[0],
        "Sorry, please choose one of the times offered."
    );
    assert_eq!(t.replies.len(), 2);

    // Cancel at the next booking node.
    let t = c.send("  CANCEL ");
    assert_eq!(types(&t), ["message.received", "appointment.cancelled"]);
    assert_eq!(t.cancel_booking.as_deref(), Some(claim.id.as_str()));
    assert_eq!(
        event(&t, EventType::AppointmentCancelled)["appointment"]["id"],
        json!(claim.id)
    );
    assert!(!c.state.memory.contains_key("appointment"));
    assert_eq!(
        t.replies[0],
        "Your appointment on Mon 24 Nov 10:30 is cancelled."
    );
    let t = c.send("cancel");
    assert_eq!(t.replies[0], "You have no appointment to cancel.");
    assert!(t.cancel_booking.is_none());
}

#[test]
fn booking_without_free_slots_moves_on() {
    let mut c = Chat::new(BOOKING);
    c.free.clear();
    let t = c.send("hi");
    // `book` has no on_error: it goes to `next`; `again` goes to its on_error.
    assert_eq!(t.replies, [SORRY_NO_SLOTS, "Booked  ().", SORRY_NO_SLOTS]);
    assert!(t.booking.is_none() && t.ended);
    assert_eq!(c.state.node.as_deref(), Some("done"));
}

const HOOKS: &str = r#"
start: look
error: oops
nodes:
  look: { webhook: weather, next: show, on_error: sorry }
  show: { ask: "{{memory.city}} is {{memory.sky}}. Pick one, {{user.nick}}:", save_as: pick, next: done }
  sorry: { message: "Weather is unavailable.", next: done }
  oops: { message: "Something broke.", next: done }
  done: { end: true, message: "You said {{memory.pick}} / {{memory.quickreply}}" }
  m:
    menu: Choose
    options:
      - { label: Poll, webhook: polls, campaign: polls }
campaigns:
  polls:
    start: p1
    nodes:
      p1: { message: "Poll time!", next: p2 }
      p2: { end: true }
"#;

#[test]
fn webhook_stop_and_resume_success() {
    let mut c = Chat::new(HOOKS);
    c.state.memory.insert("stale".into(), json!("x"));
    let t = c.send("hi");
    assert_eq!(t.call_webhook.as_deref(), Some("weather"));
    assert!(t.replies.is_empty());
    // A message while the webhook is pending asks for it again.
    let t = c.send("hello?");
    assert_eq!(
        (types(&t), t.call_webhook.as_deref()),
        (vec!["message.received"], Some("weather"))
    );

    let reply = WebhookReply::from_json(&json!({
        "responses": ["Checking {{memory.city}}…"],
        "memory": {"city": "Madrid", "sky": "sunny", "stale": null},
        "user_attributes": {"nick": "Ace"},
        "quickreplies": ["Red", "Blue"],
        "extra": 1
    }))
    .unwrap();
    let t = c.resume(Ok(reply));
    assert_eq!(
        t.replies,
        [
            "Checking {{memory.city}}…",
            "Madrid is sunny. Pick one, Ace:"
        ],
        "returned text is shown as written; the flow's own texts are rendered"
    );
    assert_eq!(t.quick_replies, ["Red", "Blue"]);
    assert_eq!(t.user_attributes["nick"], json!("Ace"));
    assert!(!c.state.memory.contains_key("stale"), "null deletes");
    let t = c.send("blue");
    assert_eq!(c.state.memory["quickreply"], json!("Blue"));
    assert_eq!(t.replies, ["You said blue / Blue"]);
}

#[test]
fn webhook_reply_types_are_checked() {
    assert!(
        WebhookReply::from_json(&json!({"responses": "hi"}))
            .unwrap_err()
            .contains("responses")
    );
    assert!(
        WebhookReply::from_json(&json!({"memory": []}))
            .unwrap_err()
            .contains("memory")
    );
    assert!(WebhookReply::from_json(&json!([1])).is_err());
    assert_eq!(
        WebhookReply::from_json(&json!({})).unwrap(),
        WebhookReply::default()
    );
}

#[test]
fn webhook_failure_paths() {
    // on_error of the node.
    let mut c = Chat::new(HOOKS);
    c.send("hi");
    let t = c.resume(Err("timeout".into()));
    assert_eq!(t.replies, ["Weather is unavailable.", "You said  / "]);

    // The flow's error node when the node has none.
    let mut c = Chat::new(&HOOKS.replace(", on_error: sorry", ""));
    c.send("hi");
    let t = c.resume(Err("HTTP 500".into()));
    assert_eq!(t.replies[0], "Something broke.");

    // No error node at all: apologise and go on.
    let mut c = Chat::new(
        &HOOKS
            .replace(", on_error: sorry", "")
            .replace("error: oops\n", ""),
    );
    c.send("hi");
    let t = c.resume(Err("dns".into()));
    assert_eq!(t.replies[0], SORRY_WEBHOOK);
    assert_eq!(c.state.node.as_deref(), Some("show"));

    // Resuming with nothing pending changes nothing.
    let before = c.state.clone();
    let t = c.resume(Ok(WebhookReply::default()));
    assert!(t.replies.is_empty() && t.events.is_empty() && c.state == before);
}

#[test]
fn option_webhook_then_campaign() {
    let mut c = Chat::new(&HOOKS.replace("start: look", "start: m"));
    c.send("hi");
    let t = c.send("1");
    assert_eq!(t.call_webhook.as_deref(), Some("polls"));
    let t = c.resume(Ok(WebhookReply::default()));
    assert_eq!(t.replies, ["Poll time!"]);
    assert_eq!(c.state.flow, "polls");
    assert!(t.ended);
    // Failure of an option webhook goes to the flow's error node.
    let mut c = Chat::new(&HOOKS.replace("start: look", "start: m"));
    c.send("hi");
    c.send("poll");
    let t = c.resume(Err("refused".into()));
    assert_eq!(t.replies[0], "Something broke.");
}

#[test]
fn end_node() {
    let mut c = Chat::new(
        "start: a\nnodes:\n  a: { message: \"Hi {{contact.phone}}\", next: b }\n  b: { end: true, message: Bye }\n",
    );
    let t = c.send("hey");
    assert_eq!(t.replies, ["Hi +525500000000", "Bye"]);
    assert_eq!(
        types(&t),
        [
            "conversation.started",
            "message.received",
            "conversation.completed"
        ]
    );
    assert!(t.ended && c.state.completed);
}

#[test]
fn option_redirected_to_the_endpoint_notifies_then_completes() {
    let mut c = Chat::new(
        "start: m\nnodes:\n  m:\n    menu: Pick\n    options:\n      - { keyword: 1, label: Call me, notify: true }\n      - { keyword: 2, label: Stay, next: e }\n  e: { end: true }\n",
    );
    c.send("hi");
    let t = c.send("1");
    assert_eq!(
        types(&t),
        [
            "message.received",
            "option.selected",
            "conversation.completed"
        ]
    );
    assert_eq!(
        event(&t, EventType::OptionSelected)["option"],
        json!("Call me")
    );
    assert_eq!(
        event(&t, EventType::ConversationCompleted)["node"],
        json!("m")
    );
    assert!(
        t.replies.is_empty(),
        "the receiving system answers, not the bot"
    );
    assert!(t.ended && c.state.completed);
}

#[test]
fn flow_changed_restarts() {
    let mut c = at_menu();
    c.flow = Flow::from_yaml(&FIXTURE.replace("membership", "plans")).unwrap();
    let t = c.send("1");
    assert_eq!(types(&t), ["message.received"]);
    assert_eq!(t.events[0].data["node"], json!("membership"));
    assert_eq!(
        t.replies,
        [
            RESTARTED,
            "Welcome to EliPackage, can you enter your name, please?"
        ]
    );
    assert_eq!(c.state.node.as_deref(), Some("welcome"));
    assert_eq!(c.state.memory["name"], json!("Ana Gómez"), "memory kept");
}

#[test]
fn runaway_loop_guard() {
    let mut c = Chat::new(
        "start: a\nnodes:\n  a: { message: again, next: b }\n  b: { message: and again, next: a }\n",
    );
    let t = c.send("hi");
    assert_eq!(t.replies.len(), MAX_HOPS + 1);
    assert_eq!(t.replies.last().map(String::as_str), Some(SORRY_BROKEN));
    assert!(t.ended && c.state.completed);
    assert!(!types(&t).contains(&"conversation.completed"));
}

#[test]
fn unreadable_input_is_asked_again() {
    let mut c = Chat::new(FIXTURE);
    let t = c.send("   ");
    assert!(t.events.is_empty() && c.state.node.is_none());
    assert_eq!(t.replies[1], "Please send a text message.");
    c.send("hi");
    let before = c.state.clone();
    for bad in ["", "\u{0}", "a\u{7}b", &"x".repeat(MAX_TEXT + 1)] {
        let t = c.send(bad);
        assert!(t.events.is_empty(), "{bad:?}");
        assert!(t.replies[0].starts_with(SORRY_UNREADABLE));
        assert_eq!(
            t.replies[1],
            "Welcome to EliPackage, can you enter your name, please?"
        );
        assert_eq!(c.state, before);
    }
    let t = c.send("Ana\n\tGómez");
    assert_eq!(types(&t), ["message.received", "response.received"]);
}

#[test]
fn state_round_trips_as_json() {
    let mut c = at_menu();
    c.state.offered_slots = slots(2);
    let v = serde_json::to_value(&c.state).unwrap();
    assert_eq!(serde_json::from_value::<State>(v).unwrap(), c.state);
}

const LEADS: &str = include_str!("../../../examples/leads.yaml");
const HELPDESK: &str = include_str!("../../../examples/helpdesk.yaml");

fn example_flow(src: &str) -> String {
    let bot = crate::domain::flow::BotFile::from_yaml(src).unwrap();
    bot.flow.to_yaml()
}

#[test]
fn conditions_route_and_set_scores() {
    let mut c = Chat::new(&example_flow(LEADS));
    let t = c.send("hi");
    assert_eq!(
        t.replies,
        [
            "Hi! Three quick questions and we will put you in touch with the right team.",
            "What is your work e-mail?"
        ]
    );
    assert_eq!(t.media.len(), 1);
    assert_eq!(t.media[0].0, 0, "the image goes with the first reply");
    assert_eq!(t.media[0].1.url, "https://example.com/leads/welcome.png");
    c.send("ana@acme.com");
    c.send("1500");
    let t = c.send("3");
    assert_eq!(
        c.state.memory["size"],
        json!("50 or more"),
        "a choice by number"
    );
    assert_eq!(c.state.memory["score"], json!(100));
    assert_eq!(
        c.state.memory["summary"],
        json!("ana@acme.com, 1500 EUR, 50 or more people")
    );
    assert_eq!(t.user_attributes["segment"], json!("enterprise"));
    assert_eq!(
        t.replies,
        ["Great fit! A sales engineer will write to ana@acme.com today (score 100)."]
    );
    assert!(t.ended && t.log.is_empty());

    // A low score goes to the else branch, with its file.
    let mut c = Chat::new(&example_flow(LEADS));
    c.send("hi");
    c.send("bob@gmail.com");
    c.send("50");
    let t = c.send("1-9");
    assert_eq!(c.state.memory["score"], json!(0));
    assert_eq!(
        t.replies[0],
        "Thank you! Our free plan is a good place to start."
    );
    assert_eq!(t.media[0].1.kind, crate::domain::flow::MediaKind::File);
}

#[test]
fn an_evaluation_error_takes_else_and_is_logged() {
    let y = r#"
start: q
nodes:
  q: { ask: "Code?", save_as: code, next: route }
  route:
    set: { memory.n: "memory.code + 1" }
    next:
      - if: memory.code >= 10
        then: big
      - else: small
  big: { message: big, next: done }
  small: { message: small, next: done }
  done: { end: true }
"#;
    let mut c = Chat::new(y);
    c.send("hi");
    let t = c.send("12");
    // The answer is text: "12" + 1 and "12" >= 10 are type errors.
    assert_eq!(t.replies, ["small"]);
    assert_eq!(t.log.len(), 2, "{:?}", t.log);
    assert!(t.log[0].contains("set memory.n was skipped"), "{:?}", t.log);
    assert!(t.log[1].contains("next[0].if"), "{:?}", t.log);
    assert!(!c.state.memory.contains_key("n"));
    assert!(t.ended, "never stuck");
}

#[test]
fn keywords_come_first_and_opt_out() {
    let mut c = Chat::new(&example_flow(LEADS));
    c.send("hi");
    c.send("ana@acme.com");
    // "MENU" (case and spaces ignored) starts over at any waiting node.
    let t = c.send("  MENU ");
    assert_eq!(types(&t), ["message.received"]);
    assert_eq!(t.replies[1], "What is your work e-mail?");
    assert_eq!(c.state.node.as_deref(), Some("email"));
    let t = c.send("Stop");
    assert_eq!(
        types(&t),
        [
            "message.received",
            "contact.opted_out",
            "conversation.completed"
        ]
    );
    assert_eq!(
        event(&t, EventType::ContactOptedOut)["keyword"],
        json!("stop")
    );
    assert_eq!(c.contact.attributes["opted_out"], json!(true));
    assert!(t.ended);
    // A new conversation: "start" opts back in and runs its node.
    c.state = State::new();
    let t = c.send("start");
    assert_eq!(
        types(&t),
        [
            "conversation.started",
            "message.received",
            "contact.opted_in"
        ]
    );
    assert_eq!(c.contact.attributes["opted_out"], json!(false));
    assert_eq!(c.state.node.as_deref(), Some("email"));
}

#[test]
fn choices_are_tappable_and_numbered() {
    let mut c = Chat::new(&example_flow(HELPDESK));
    c.send("hi");
    let t = c.send("Printer on fire");
    assert_eq!(t.quick_replies, ["low", "high", "critical"]);
    let t = c.send("4");
    assert_eq!(
        t.replies,
        [
            "Sorry, it must be one of: low, high, critical. How bad is it: low, high or critical?
1. low
2. high
3. critical"
        ]
    );
    assert_eq!(t.quick_replies, ["low", "high", "critical"]);
    let t = c.send("3");
    assert_eq!(
        event(&t, EventType::ResponseReceived)["response"],
        json!("3")
    );
    assert_eq!(c.state.memory["severity"], json!("critical"));
    assert_eq!(
        t.replies,
        ["Critical: the on-call engineer has been paged and will call you within 15 minutes."]
    );
}

#[test]
fn timers_remind_time_out_and_expire() {
    let mut c = Chat::new(&example_flow(HELPDESK));
    let t = c.send("hi");
    let plans: Vec<TimerKind> = t.timers.clone().unwrap().iter().map(|p| p.kind).collect();
    assert_eq!(plans, [TimerKind::Expiry], "describe has no reminder");
    let t = c.send("VPN is down");
    let plans = t.timers.clone().unwrap();
    assert_eq!(
        plans
            .iter()
            .map(|p| (p.kind, (p.due_at - now()).num_minutes()))
            .collect::<Vec<_>>(),
        [
            (TimerKind::Reminder, 10),
            (TimerKind::Timeout, 30),
            (TimerKind::Expiry, 24 * 60)
        ]
    );
    // The reminder: said once, the other timers stay.
    let t = c.timer(TimerKind::Reminder, Some("severity"), 10);
    assert_eq!(
        t.replies,
        [
            "Are you still there? Choose low, high or critical so we can route your ticket.
1. low
2. high
3. critical"
        ]
    );
    assert!(t.timers.is_none() && t.events.is_empty());
    // A timer set at a node the conversation left does nothing.
    let t = c.timer(TimerKind::Reminder, Some("describe"), 11);
    assert!(t.replies.is_empty());
    // The timeout goes to on_timeout.
    let t = c.timer(TimerKind::Timeout, Some("severity"), 30);
    assert_eq!(
        t.replies,
        ["We did not hear back, so we opened a ticket with what you told us."]
    );
    assert!(t.ended);
    assert_eq!(t.timers, Some(vec![]));

    // Expiry ends an idle conversation with conversation.expired.
    let mut c = Chat::new(&example_flow(HELPDESK));
    c.send("hi");
    let t = c.timer(TimerKind::Expiry, None, 24 * 60);
    assert_eq!(types(&t), ["conversation.expired"]);
    assert_eq!(
        event(&t, EventType::ConversationExpired)["node"],
        json!("describe")
    );
    assert!(t.ended && c.state.completed);
    assert_eq!(t.timers, Some(vec![]));
    // Nothing fires on a completed conversation.
    assert!(c.timer(TimerKind::Expiry, None, 25 * 60).events.is_empty());
}

#[test]
fn an_expiry_is_stored_once_and_rearms_itself_after_later_turns() {
    let ms = |minutes: i64| (now() + chrono::Duration::minutes(minutes)).timestamp_millis();
    let mut c = Chat::new(&example_flow(LEADS));
    let t = c.send("hi");
    let plans: Vec<(TimerKind, i64)> = t
        .timers
        .clone()
        .unwrap()
        .iter()
        .map(|p| (p.kind, p.due_at.timestamp_millis()))
        .collect();
    assert_eq!(plans, [(TimerKind::Expiry, ms(24 * 60))]);
    assert_eq!(c.state.expires_at, Some(ms(24 * 60)));
    // Later turns at nodes without reminders leave the stored timer alone
    // and only move the expiry time in the state.
    let t = c.send("ana@acme.com");
    assert_eq!(
        t.timers, None,
        "no timer write on a turn that only moves the expiry"
    );
    assert_eq!(c.state.expires_at, Some(ms(24 * 60)));
    // As if that turn had come an hour later: the stored timer fires
    // early, changes nothing and waits again until the latest expiry.
    c.state.expires_at = Some(ms(25 * 60));
    let t = c.timer(TimerKind::Expiry, None, 24 * 60);
    assert_eq!(
        t.rearm_expiry.map(|d| d.timestamp_millis()),
        Some(ms(25 * 60))
    );
    assert!(t.events.is_empty() && t.replies.is_empty() && !t.ended);
    assert!(!c.state.completed);
    let t = c.timer(TimerKind::Expiry, None, 25 * 60);
    assert_eq!(types(&t), ["conversation.expired"]);
    assert_eq!(t.rearm_expiry, None);
    assert_eq!(
        t.timers,
        Some(vec![]),
        "the ended conversation's timers are cleared"
    );
    assert_eq!(c.state.expires_at, None);
}

#[test]
fn a_flow_without_timers_writes_none() {
    let mut c = Chat::new(FIXTURE);
    for text in ["hi", "2", "John"] {
        let t = c.send(text);
        assert_eq!(t.timers, None, "{text}");
    }
}

/// An `ask`, then `messages` message nodes and an `end`, each text being
/// `{{memory.n}}` 341 times (4,092 characters, under the flow's limit).
fn multiplier(messages: usize) -> String {
    let tags = "{{memory.n}}".repeat(341);
    let mut yaml = String::from(
        "start: ask\nnodes:\n  ask: { ask: \"Say something\", save_as: n, next: m1 }\n",
    );
    for i in 1..=messages {
        let next = if i == messages {
            "done".to_string()
        } else {
            format!("m{}", i + 1)
        };
        yaml.push_str(&format!(
            "  m{i}: {{ message: \"{tags}\", next: {next} }}\n"
        ));
    }
    yaml.push_str(&format!("  done: {{ end: true, message: \"{tags}\" }}\n"));
    yaml
}

#[test]
fn merge_tags_cannot_multiply_the_output() {
    // 100 texts of 341 tags after a 4,000-character answer rendered to
    // 136 MB before the caps.
    let mut c = Chat::new(&multiplier(99));
    c.send("hi");
    let t = c.send(&"x".repeat(4000));
    assert_eq!(types(&t), ["message.received", "conversation.completed"]);
    assert!(t.ended);
    assert_eq!(c.state.memory["n"], json!("x".repeat(4000)));
    let total: usize = t.replies.iter().map(String::len).sum();
    assert_eq!(t.replies.len(), MAX_TURN_BYTES / MAX_REPLY_BYTES);
    assert_eq!(total, MAX_TURN_BYTES);
    for r in &t.replies {
        assert_eq!(r.len(), MAX_REPLY_BYTES);
        assert!(r.ends_with(CUT_MARKER));
        assert!(r.trim_end_matches(CUT_MARKER).bytes().all(|b| b == b'x'));
    }
    assert_eq!(
        t.cut,
        ReplyCut {
            shortened: 16,
            dropped: 100 - 16
        }
    );

    // Multi-byte text is cut on a char boundary.
    let mut c = Chat::new(&multiplier(2));
    c.send("hi");
    let t = c.send(&"€".repeat(1000));
    assert_eq!(t.replies.len(), 3);
    for r in &t.replies {
        assert!(r.len() <= MAX_REPLY_BYTES && r.ends_with(CUT_MARKER));
        assert!(r.trim_end_matches(CUT_MARKER).chars().all(|ch| ch == '€'));
    }
    assert_eq!(t.cut.shortened, 3);
}

#[test]
fn a_long_menu_text_is_cut_before_its_options() {
    let mut c = Chat::new(&format!(
        "start: a\nnodes:\n  a: {{ ask: \"Name?\", save_as: n, next: m }}\n  m:\n    menu: \"{}\"\n    options:\n      - {{ keyword: 1, label: One, next: done }}\n      - {{ keyword: 2, label: Two, next: done }}\n  done: {{ end: true }}\n",
        "{{memory.n}}".repeat(341)
    ));
    c.send("hi");
    let t = c.send(&"y".repeat(4000));
    assert_eq!(t.replies.len(), 1);
    let menu = &t.replies[0];
    assert!(menu.len() <= MAX_REPLY_BYTES, "{}", menu.len());
    assert!(
        menu.ends_with(&format!("{CUT_MARKER}\n1. One\n2. Two")),
        "{}",
        &menu[menu.len() - 40..]
    );
    assert_eq!(t.cut.shortened, 1);
}

#[test]
fn the_turn_budget_cuts_the_reply_that_crosses_it() {
    let full = || std::iter::repeat_n("a".repeat(MAX_REPLY_BYTES), 15);

    // Room left for part of the crossing reply: it is cut to fit, and
    // anything after it is dropped. Blank replies are skipped.
    let mut cut = ReplyCut::default();
    let replies = std::iter::once("  ".to_string())
        .chain(full())
        .chain(["d".repeat(4000), "b".repeat(5000), "z".into()])
        .collect();
    let out = cap_replies(replies, &mut cut);
    assert_eq!(out.len(), 17);
    assert_eq!(out.iter().map(String::len).sum::<usize>(), MAX_TURN_BYTES);
    assert_eq!(out[16], format!("{}{CUT_MARKER}", "b".repeat(90)));
    assert_eq!(
        cut,
        ReplyCut {
            shortened: 1,
            dropped: 1
        }
    );

    // Less room left than the marker: the crossing reply is dropped and
    // the one before it carries the marker.
    let mut cut = ReplyCut::default();
    let replies = full()
        .chain(["c".repeat(MAX_REPLY_BYTES - 2), "bbbbbbbbbb".into()])
        .collect();
    let out = cap_replies(replies, &mut cut);
    assert_eq!(out.len(), 16);
    assert_eq!(out.iter().map(String::len).sum::<usize>(), MAX_TURN_BYTES);
    assert_eq!(
        out[15],
        format!("{}{CUT_MARKER}", "c".repeat(MAX_REPLY_BYTES - 6))
    );
    assert_eq!(
        cut,
        ReplyCut {
            shortened: 1,
            dropped: 1
        }
    );

    // Within both caps nothing changes.
    let mut cut = ReplyCut::default();
    let replies: Vec<String> = full().collect();
    assert_eq!(cap_replies(replies.clone(), &mut cut), replies);
    assert!(cut.is_empty());
}

#[test]
fn webhook_text_is_never_rendered() {
    let mut c = Chat::new(HOOKS);
    c.state.memory.insert("secret".into(), json!("s3cr3t"));
    c.send("hi");
    let echoed = "{{memory.secret}} {{contact.id}} {{user.age}}";
    let reply = WebhookReply::from_json(&json!({
        "responses": [echoed],
        "memory": {"city": "Madrid", "sky": "sunny"},
        "quickreplies": [echoed],
    }))
    .unwrap();
    let t = c.resume(Ok(reply));
    assert_eq!(t.replies[0], echoed);
    assert_eq!(t.quick_replies, [echoed]);
    assert!(!t.replies.concat().contains("s3cr3t"));
    // Choosing it stores it as offered, still as text.
    let t = c.send(echoed);
    assert_eq!(c.state.memory["quickreply"], json!(echoed));
    assert!(t.replies[0].contains("{{contact.id}}"), "{:?}", t.replies);
}

fn filler(bytes: usize) -> Value {
    json!("f".repeat(bytes))
}

#[test]
fn memory_and_attributes_are_bounded() {
    // A webhook reply that would grow memory past the bound takes the
    // failure path, and memory stays as it was.
    let mut c = Chat::new(HOOKS);
    c.state
        .memory
        .insert("fill".into(), filler(MAX_MEMORY_BYTES - 5_000));
    c.send("hi");
    let before = c.state.memory.clone();
    let big = WebhookReply::from_json(&json!({"memory": {"more": filler(10_000)}})).unwrap();
    assert_eq!(
        check_reply_size(&big, &c.state, &c.contact, &Map::new()),
        Err(TooLarge::Memory)
    );
    let t = c.resume(Ok(big));
    assert_eq!(t.replies[0], "Weather is unavailable.");
    assert_eq!(c.state.memory, before);

    // Over the bound already (an older conversation): shrinking is allowed.
    let mut c = Chat::new(HOOKS);
    c.state
        .memory
        .insert("fill".into(), filler(MAX_MEMORY_BYTES + 10));
    c.send("hi");
    let shrink =
        WebhookReply::from_json(&json!({"memory": {"fill": null, "city": "Oslo", "sky": "grey"}}))
            .unwrap();
    let t = c.resume(Ok(shrink));
    assert_eq!(t.replies[0], "Oslo is grey. Pick one, :");

    // Contact attributes, counting the changes earlier in the turn.
    let mut contact = contact();
    contact
        .attributes
        .insert("fill".into(), filler(MAX_ATTRIBUTES_BYTES - 20_000));
    let mut pending = Map::new();
    pending.insert("more".into(), filler(15_000));
    let reply = WebhookReply::from_json(&json!({"user_attributes": {"x": filler(6_000)}})).unwrap();
    let state = State::new();
    assert_eq!(
        check_reply_size(&reply, &state, &contact, &Map::new()),
        Ok(())
    );
    assert_eq!(
        check_reply_size(&reply, &state, &contact, &pending),
        Err(TooLarge::UserAttributes)
    );

    // An answer that would not fit is asked again, with nothing saved.
    let mut c = Chat::new(
        "start: a\nnodes:\n  a: { ask: \"Note?\", save_as: note, notify: true, next: b }\n  b: { end: true }\n",
    );
    c.state
        .memory
        .insert("fill".into(), filler(MAX_MEMORY_BYTES - 1_000));
    c.send("hi");
    let before = c.state.clone();
    let t = c.send(&"n".repeat(4000));
    assert_eq!(types(&t), ["message.received"]);
    assert_eq!(t.replies, [format!("{SORRY_TOO_BIG} Note?")]);
    assert_eq!(c.state, before);
    let t = c.send("short");
    assert_eq!(
        types(&t),
        [
            "message.received",
            "response.received",
            "conversation.completed"
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn replies_stay_within_the_caps(lens in prop::collection::vec((0usize..6000, 0usize..3), 0..40)) {
        let chars = ['a', 'é', '€'];
        let replies: Vec<String> = lens
            .iter()
            .map(|&(n, c)| chars[c].to_string().repeat(n / chars[c].len_utf8()))
            .collect();
        let mut cut = ReplyCut::default();
        let out = cap_replies(replies.clone(), &mut cut);
        prop_assert!(out.iter().map(String::len).sum::<usize>() <= MAX_TURN_BYTES);
        prop_assert!(out.iter().all(|r| r.len() <= MAX_REPLY_BYTES && !r.trim().is_empty()));
        let said: Vec<String> = replies.into_iter().filter(|r| !r.trim().is_empty()).collect();
        prop_assert_eq!(out.len() + cut.dropped, said.len());
        if cut.is_empty() {
            prop_assert_eq!(out, said);
        }
    }

    #[test]
    fn step_never_panics(texts in prop::collection::vec("\\PC{0,40}|[0-9 ]{1,3}|.{0,10}", 1..6)) {
        let mut c = Chat::new(FIXTURE);
        for t in &texts {
            let turn = c.send(t);
            if let Some(name) = turn.call_webhook {
                prop_assert_eq!(name, "weather");
                c.resume(Err("no network in tests".into()));
            }
        }
    }
}

#[test]
fn media_is_recorded_and_its_caption_read() {
    let mut c = Chat::new(FIXTURE);
    let ctx_step = |c: &mut Chat, input: Input| {
        let ctx = Context {
            conversation_id: "cv_1",
            contact: &c.contact,
            now: now(),
            price_table: None,
            calendar: None,
            free_slots: &[],
            taken_slot: None,
            channel: "whatsapp",
        };
        let t = step(&c.flow, &c.state, &ctx, input);
        check(&t);
        c.state = t.state.clone();
        t
    };
    let photo = Input::Media {
        kind: "image",
        id: Some("1479537139650973"),
        caption: None,
    };
    // A first message that is a picture opens the conversation.
    let t = ctx_step(&mut c, photo);
    assert_eq!(types(&t), ["conversation.started", "message.received"]);
    let m = event(&t, EventType::MessageReceived);
    assert_eq!(
        m["media"],
        json!({"type": "image", "id": "1479537139650973"})
    );
    assert_eq!(m["text"], "");
    assert_eq!(c.state.node.as_deref(), Some("welcome"));
    // At a question, a picture without caption asks again.
    let t = ctx_step(&mut c, photo);
    assert_eq!(types(&t), ["message.received"]);
    assert_eq!(t.replies[0], SORRY_MEDIA);
    assert!(t.replies[1].starts_with("Welcome to EliPackage"));
    assert_eq!(c.state.node.as_deref(), Some("welcome"));
    // Its caption is the answer.
    let t = ctx_step(
        &mut c,
        Input::Media {
            kind: "image",
            id: Some("2"),
            caption: Some("John Doe"),
        },
    );
    assert_eq!(types(&t), ["message.received", "response.received"]);
    assert_eq!(event(&t, EventType::MessageReceived)["media"]["id"], "2");
    assert_eq!(c.state.memory["name"], json!("John Doe"));
}
