//! The publisher (`src/nats/publisher.rs`) against a real nats-server: its PubAcks come
//! to one subscription of its own and are handed to their publishes by number.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use async_nats::RequestErrorKind;
use blob_router::nats::publisher::{AckError, PublishFailure, Publisher};
use futures::StreamExt;

use crate::support::NatsServer;

/// A stream `OUT` on `out.>`; `none.>` is captured by no stream.
async fn setup(js: &jetstream::Context) -> stream::Stream {
    js.create_stream(stream::Config {
        name: "OUT".into(),
        subjects: vec!["out.>".into()],
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn connect(nats: &NatsServer) -> async_nats::Client {
    async_nats::connect(nats.url()).await.unwrap()
}

/// A server with the `OUT` stream, and a publisher (waiting `timeout` for each PubAck)
/// on a client of its own, returned too.
async fn start(timeout: Duration) -> (NatsServer, stream::Stream, async_nats::Client, Publisher) {
    let nats = NatsServer::start();
    let out = setup(&nats.jetstream().await).await;
    let client = connect(&nats).await;
    let publisher = Publisher::new(client.clone(), timeout).await.unwrap();
    (nats, out, client, publisher)
}

/// What `publish` failed with, which must be transient and come well before the
/// publish timeout (a publish that waited for it fails here).
async fn fails_soon<T: std::fmt::Debug>(
    what: &str,
    publish: impl std::future::Future<Output = Result<T, PublishFailure>>,
) {
    let failed = tokio::time::timeout(Duration::from_secs(30), publish)
        .await
        .unwrap_or_else(|_| panic!("{what} waited for its timeout"))
        .unwrap_err();
    assert!(
        matches!(failed, PublishFailure::Transient { .. }),
        "{what}: {failed:?}"
    );
    // Not taken for a timeout: the client closed.
    assert_ne!(
        request_kind(&failed),
        Some(RequestErrorKind::TimedOut),
        "{what}: {failed:?}"
    );
}

/// The kind of request error a transient failure carries (a timeout, the client closed).
fn request_kind(failure: &PublishFailure) -> Option<RequestErrorKind> {
    let PublishFailure::Transient {
        source: Some(source),
        ..
    } = failure
    else {
        return None;
    };
    match source.downcast_ref::<AckError>()? {
        AckError::Request(e) => Some(e.kind()),
        _ => None,
    }
}

fn msg_id(id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Nats-Msg-Id", id);
    h
}

/// Many publishes in flight at once, stored ones and ones no stream captures taken in
/// turn: each gets its own answer (a PubAck handed to the wrong publish would show as a
/// stored subject reported stream-less, or the other way round), and every stored one
/// is in the stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_publish_in_flight_gets_its_own_answer() {
    let (_nats, out, _client, publisher) = start(Duration::from_secs(10)).await;
    let subject = |n: usize| {
        if n.is_multiple_of(5) {
            format!("none.{n}")
        } else {
            format!("out.{n}")
        }
    };
    let mut pending = Vec::new();
    for n in 0..300 {
        let sent = publisher
            .send(
                &subject(n),
                msg_id(&format!("m-{n}")),
                format!("{n}").into(),
            )
            .await
            .unwrap();
        pending.push(sent);
    }
    // Confirmed last first: answers that came in order wait in their own slots.
    for (n, sent) in pending.into_iter().enumerate().rev() {
        let subject = subject(n);
        let confirmed = publisher.confirm(&subject, sent).await;
        if n.is_multiple_of(5) {
            assert!(
                matches!(&confirmed, Err(PublishFailure::NoStream(s)) if *s == subject),
                "{subject}: {confirmed:?}"
            );
        } else {
            assert!(confirmed.is_ok(), "{subject}: {confirmed:?}");
        }
    }
    assert_eq!(out.clone().info().await.unwrap().state.messages, 240);
    // Sent again (a redelivered input): de-duplicated, still answered as stored.
    publisher
        .publish("out.1", msg_id("m-1"), "1".into())
        .await
        .unwrap();
    assert_eq!(out.clone().info().await.unwrap().state.messages, 240);
}

/// A subscriber on `quiet.>` that answers nothing (so the server sends no "no
/// responders" either): a publish there waits for its timeout. After [`start`].
async fn quiet(nats: &NatsServer) -> (async_nats::Client, async_nats::Subscriber) {
    let client = connect(nats).await;
    let sub = client.subscribe("quiet.>").await.unwrap();
    // The server has the subscription before anything is published to it: it reads a
    // connection in order, so an answer to a later request on it proves the SUB was
    // read (a flush only writes it out).
    jetstream::new(client.clone())
        .get_stream("OUT")
        .await
        .unwrap();
    (client, sub)
}

/// A publish that timed out, one cancelled while it waited and one whose pending answer
/// was dropped leave nothing waiting; their answers, when they come late, are dropped
/// and harm no later publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_given_up_leave_nothing_waiting_and_late_answers_are_dropped() {
    let (nats, _out, _client, publisher) = start(Duration::from_millis(300)).await;
    let (responder, mut asked) = quiet(&nats).await;

    let timed_out = publisher
        .publish("quiet.1", msg_id("q-1"), "1".into())
        .await
        .unwrap_err();
    assert_eq!(
        request_kind(&timed_out),
        Some(RequestErrorKind::TimedOut),
        "{timed_out:?}"
    );
    assert_eq!(publisher.awaiting_answers(), 0);

    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        publisher.publish("quiet.2", msg_id("q-2"), "2".into()),
    )
    .await;
    assert!(cancelled.is_err(), "a publish to quiet.2 was answered");
    assert_eq!(publisher.awaiting_answers(), 0);

    let pending = publisher
        .send("quiet.3", msg_id("q-3"), "3".into())
        .await
        .unwrap();
    assert_eq!(publisher.awaiting_answers(), 1);
    drop(pending);
    assert_eq!(publisher.awaiting_answers(), 0);

    // They reached the responder (the cancelled one too, unless it was cancelled
    // before the client queued it); it answers each now, too late.
    loop {
        let request = tokio::time::timeout(Duration::from_secs(10), asked.next())
            .await
            .expect("the publishes reached the responder")
            .unwrap();
        let reply = request.reply.expect("published with a reply subject");
        responder
            .publish(reply, r#"{"stream":"OUT","seq":99}"#.into())
            .await
            .unwrap();
        if request.subject.as_str() == "quiet.3" {
            break;
        }
    }
    responder.flush().await.unwrap();
    publisher
        .publish("out.1", msg_id("m-1"), "1".into())
        .await
        .unwrap();
    assert_eq!(publisher.awaiting_answers(), 0);
}

/// Once its client is closed, a publish waiting for its answer fails at once, and so
/// does a new one, as transient (the input is retried later), rather than waiting out
/// the publish timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_client_fails_publishes_at_once() {
    let (nats, _out, client, publisher) = start(Duration::from_secs(3600)).await;
    let (_responder, _asked) = quiet(&nats).await;
    publisher
        .publish("out.0", msg_id("before"), "0".into())
        .await
        .unwrap();
    let waiting = publisher
        .send("quiet.1", msg_id("waiting"), "1".into())
        .await
        .unwrap();
    client.drain().await.unwrap();
    fails_soon(
        "a publish waiting when the client closed",
        publisher.confirm("quiet.1", waiting),
    )
    .await;
    fails_soon(
        "a publish on a closed client",
        publisher.publish("out.1", msg_id("after"), "1".into()),
    )
    .await;
    assert_eq!(publisher.awaiting_answers(), 0);
}

/// A publish timeout too long for the clock (the flag takes years) is no deadline, not
/// a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_past_the_clock_is_no_deadline() {
    let (_nats, _out, _client, publisher) = start(Duration::MAX).await;
    publisher
        .publish("out.0", msg_id("m-0"), "0".into())
        .await
        .unwrap();
}

/// While the client cannot take a publish at all (its channel full: the server is gone
/// and it is reconnecting), `send` waits for room no longer than the publish timeout,
/// then fails as a transient timeout: the input is retried later, not held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_the_client_cannot_take_gives_up_at_its_deadline() {
    let mut nats = NatsServer::start();
    setup(&nats.jetstream().await).await;
    // Room for one command: the second publish queued while disconnected has to wait.
    let client = async_nats::ConnectOptions::new()
        .client_capacity(1)
        .connect(nats.url())
        .await
        .unwrap();
    let timeout = Duration::from_millis(500);
    let publisher = Publisher::new(client.clone(), timeout).await.unwrap();
    publisher
        .publish("out.0", msg_id("before"), "0".into())
        .await
        .unwrap();
    nats.kill();
    let gone = tokio::time::timeout(Duration::from_secs(30), async {
        while client.connection_state() == async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    gone.await.expect("the client notices the server is gone");
    let mut queued = Vec::new();
    let (failed, waited) = loop {
        let sent = std::time::Instant::now();
        let send = publisher.send("out.1", msg_id(&format!("m-{}", queued.len())), "1".into());
        match tokio::time::timeout(Duration::from_secs(30), send)
            .await
            .expect("a send gives up at its deadline")
        {
            Ok(pending) => queued.push(pending),
            Err(failed) => break (failed, sent.elapsed()),
        }
        assert!(queued.len() < 100, "the client's channel never filled");
    };
    assert_eq!(
        request_kind(&failed),
        Some(RequestErrorKind::TimedOut),
        "{failed:?}"
    );
    assert!(
        matches!(failed, PublishFailure::Transient { .. }),
        "{failed:?}"
    );
    assert!(
        waited >= timeout,
        "it waited for room until its deadline: {waited:?}"
    );
    // The one that gave up left nothing waiting; the queued ones wait at most until
    // they are let go (their deadlines have passed too), and leave nothing once dropped.
    assert!(publisher.awaiting_answers() <= queued.len());
    drop(queued);
    assert_eq!(publisher.awaiting_answers(), 0);
}
