//! The puller (`src/nats/pull.rs`) against a real nats-server: one message at a time,
//! a restarted server, a deleted consumer.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use blob_router::nats::consumer::Delivered;
use blob_router::nats::pull::{PullError, PullSettings, Puller};

use crate::support::{eventually, NatsServer};

/// Longer than any wait below: a request that is lost from the count shows as a wait
/// for its expiry, not as a slow test.
const LONG_EXPIRY: Duration = Duration::from_secs(60);

/// A stream `IN` on `in.>` and a durable pull consumer `c` on it.
async fn setup(js: &jetstream::Context) -> jetstream::consumer::Consumer<pull::Config> {
    setup_with(js, pull::Config::default()).await
}

/// [`setup`], with the consumer's other settings from `config`.
async fn setup_with(
    js: &jetstream::Context,
    config: pull::Config,
) -> jetstream::consumer::Consumer<pull::Config> {
    let stream = js
        .create_stream(stream::Config {
            name: "IN".into(),
            subjects: vec!["in.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(pull::Config {
            durable_name: Some("c".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..config
        })
        .await
        .unwrap()
}

async fn puller(js: &jetstream::Context, batch: usize) -> Puller {
    let consumer = setup(js).await;
    let settings = PullSettings {
        batch,
        expires: LONG_EXPIRY,
    };
    Puller::new(js.clone(), &consumer, settings).await.unwrap()
}

/// The next message, which must be `in.<n>` and come within `limit`.
async fn take(messages: &mut Puller, n: usize, limit: Duration) -> jetstream::Message {
    let msg = tokio::time::timeout(limit, messages.next())
        .await
        .unwrap_or_else(|_| panic!("message {n} did not arrive (a request lost from the count?)"))
        .unwrap();
    assert_eq!(msg.subject.as_str(), format!("in.{n}"));
    msg
}

/// Publishes `in.<n>` and waits for its PubAck.
async fn publish(js: &jetstream::Context, n: usize) {
    js.publish(format!("in.{n}"), format!("{n}").into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// async-nats's stream, asked for one message at a time, lost count of the requests it
/// had sent and waited for their expiry: with this test's shape (a backlog, taken on a
/// runtime worker, each message acked by a task of its own, as the worker does) it
/// stalled within 2,000 messages. Every message must come without such a wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_at_a_time_each_arrives_without_waiting_for_an_expiry() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let mut messages = puller(&js, 1).await;
    for n in 0..2000 {
        publish(&js, n).await;
    }
    tokio::spawn(async move {
        for n in 0..2000 {
            // Well below the puller's own fallback for lost requests (two missed
            // heartbeats, 10 s at this expiry), so a miscount shows here.
            let msg = take(&mut messages, n, Duration::from_secs(3)).await;
            tokio::spawn(async move { msg.ack().await.unwrap() })
                .await
                .unwrap();
        }
    })
    .await
    .unwrap();
}

/// A batch bigger than the backlog, taken while more is published: every message
/// arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_deliver_every_message_once_in_order() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let mut messages = puller(&js, 16).await;
    for n in 0..10 {
        publish(&js, n).await;
    }
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for n in 10..500 {
                publish(&js, n).await;
            }
        })
    };
    for n in 0..500 {
        let msg = take(&mut messages, n, Duration::from_secs(10)).await;
        msg.ack().await.unwrap();
    }
    publisher.await.unwrap();
}

/// A caller that gives up waiting, over and over (a select taking another branch, as
/// the worker's consume loop does whenever a handler finishes first), loses nothing:
/// the request on its way and the wait stay in the puller, so every message still
/// comes once, in order, and none waits for a lost request's fallback. One message per
/// request, so that a single request lost from the count stalls the next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_given_up_lose_no_message_and_no_request() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let mut messages = puller(&js, 1).await;
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            for n in 0..300 {
                publish(&js, n).await;
            }
        })
    };
    let mut given_up = 0;
    for n in 0..300 {
        // Below the puller's own fallback for a lost request (two missed heartbeats,
        // 10 s at this expiry), so a miscount shows here.
        let msg = tokio::time::timeout(Duration::from_secs(8), async {
            loop {
                match tokio::time::timeout(Duration::from_micros(100), messages.next()).await {
                    Ok(msg) => return msg.unwrap(),
                    Err(_) => given_up += 1,
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!("message {n} did not come after {given_up} waits given up (a request lost from the count?)")
        });
        assert_eq!(msg.subject.as_str(), format!("in.{n}"));
        msg.ack().await.unwrap();
    }
    assert!(
        given_up > 0,
        "no wait was given up: the test tested nothing"
    );
    publisher.await.unwrap();
}

/// A server that restarts forgets the waiting requests; the puller notices the silence
/// (no heartbeat) and asks again, on the same subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_restart_pulling_resumes() {
    let mut nats = NatsServer::start();
    let js = nats.jetstream().await;
    let consumer = setup(&js).await;
    let settings = PullSettings {
        batch: 4,
        expires: Duration::from_secs(4),
    };
    let mut messages = Puller::new(js.clone(), &consumer, settings).await.unwrap();
    publish(&js, 0).await;
    messages.next().await.unwrap().double_ack().await.unwrap();
    nats.restart();
    // Published once the client is back (the publish waits for its PubAck).
    eventually(
        "publishing after the restart",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            async move {
                let ack = js.publish("in.1", "1".into()).await.ok()?;
                ack.await.ok()
            }
        },
    )
    .await;
    // JetStream may not answer for a moment after the restart (a passing error), and a
    // server killed with SIGKILL may have lost in.0's ack and deliver it again.
    let msg = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match messages.next().await {
                Ok(msg) if msg.subject.as_str() == "in.0" => msg.ack().await.unwrap(),
                Ok(msg) => break msg,
                Err(e) if !e.is_final() => continue,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the message published after the restart arrives");
    assert_eq!(msg.subject.as_str(), "in.1");
}

/// Stopping returns what was pulled and not taken; handed back with a delay of one
/// expiry (the stopped puller's request is gone by then), it goes to the next puller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_what_was_pulled_and_not_taken() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let consumer = setup(&js).await;
    for n in 0..5 {
        publish(&js, n).await;
    }
    let settings = PullSettings {
        batch: 8,
        expires: Duration::from_secs(2),
    };
    let mut messages = Puller::new(js.clone(), &consumer, settings).await.unwrap();
    // Acked and nak'ed as the worker does: on the consuming connection, held once.
    let acks = js.client();
    // One request for 8 is sent and delivers all 5; one is taken.
    let first = Delivered::new(messages.next_message().await.unwrap(), &acks);
    assert_eq!(first.subject.as_str(), "in.0");
    // Once the server has sent all 5 (the other 4 may still be on their way, or in
    // the inbox), stop collects them.
    eventually("all five delivered", Duration::from_secs(10), || {
        let js = js.clone();
        async move {
            let mut consumer: jetstream::consumer::PullConsumer =
                js.get_consumer_from_stream("c", "IN").await.ok()?;
            let info = consumer.info().await.ok()?;
            (info.num_ack_pending == 5 && info.num_pending == 0).then_some(())
        }
    })
    .await;
    first.ack().await.unwrap();
    // The ack reached the server: four left unacked.
    eventually("the first acked", Duration::from_secs(10), || {
        let js = js.clone();
        async move {
            let mut consumer: jetstream::consumer::PullConsumer =
                js.get_consumer_from_stream("c", "IN").await.ok()?;
            (consumer.info().await.ok()?.num_ack_pending == 4).then_some(())
        }
    })
    .await;
    let expiry = messages.expires();
    let rest = messages.stop(Duration::from_secs(5)).await;
    let subjects: Vec<&str> = rest.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["in.1", "in.2", "in.3", "in.4"]);
    for msg in rest {
        Delivered::new(msg, &acks)
            .ack_with(jetstream::AckKind::Nak(Some(expiry)))
            .await
            .unwrap();
    }
    let naked = std::time::Instant::now();
    // They come to another puller of the same consumer after the delay, not after
    // ack_wait (30 s), in any order (the naks are separate messages). That puller's
    // request must outlive the delay: one sent now with the same expiry would expire
    // just as the naks fall due, and nats-server 2.9 (fixed in 2.10, nats-server#5305
    // and #5338), finding a redelivery due and only an expired request waiting, drops
    // it from its redelivery queue and steps its stream cursor back instead: the
    // redelivery waits for ack_wait and the last message new to the consumer is
    // delivered again (seen under load: in.2, in.3, in.4, in.4).
    let next_settings = PullSettings {
        expires: LONG_EXPIRY,
        ..settings
    };
    let mut next = Puller::new(js.clone(), &consumer, next_settings)
        .await
        .unwrap();
    let mut again = Vec::new();
    for _ in 1..5 {
        let msg = tokio::time::timeout(Duration::from_secs(15), next.next())
            .await
            .unwrap_or_else(|_| panic!("only {again:?} were handed to the next puller"))
            .unwrap();
        // Not at once: the nak carried its delay.
        assert!(
            naked.elapsed() >= expiry / 2,
            "{} came back {:?} after its nak with a delay of {expiry:?}",
            msg.subject,
            naked.elapsed()
        );
        again.push(msg.subject.to_string());
        msg.ack().await.unwrap();
    }
    again.sort();
    assert_eq!(again, ["in.1", "in.2", "in.3", "in.4"]);
}

/// A deleted consumer ends pulling with an error the caller stops on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_a_final_error() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let mut messages = puller(&js, 8).await;
    let waiting = tokio::spawn(async move { messages.next().await.map(|_| ()) });
    // Deleted once the first request waits on the server.
    eventually("a waiting pull request", Duration::from_secs(10), || {
        let js = js.clone();
        async move {
            let mut consumer: jetstream::consumer::PullConsumer =
                js.get_consumer_from_stream("c", "IN").await.ok()?;
            (consumer.info().await.ok()?.num_waiting > 0).then_some(())
        }
    })
    .await;
    js.delete_consumer_from_stream("c", "IN").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("next() ends when the consumer is deleted")
        .unwrap();
    let err = ended.expect_err("no message: the consumer is gone");
    assert!(matches!(err, PullError::ConsumerDeleted), "{err}");
    assert!(err.is_final());
}

/// A consumer that takes fewer waiting requests than the puller sends says so; the
/// error is not final, and the request already waiting still delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_waiting_queue_is_a_passing_error() {
    let nats = NatsServer::start();
    let js = nats.jetstream().await;
    let consumer = setup_with(
        &js,
        pull::Config {
            max_waiting: 1,
            ..Default::default()
        },
    )
    .await;
    let settings = PullSettings {
        batch: 2,
        expires: LONG_EXPIRY,
    };
    let mut messages = Puller::new(js.clone(), &consumer, settings).await.unwrap();
    publish(&js, 0).await;
    // The first request (2 messages) delivers one and keeps waiting for the other; one
    // owed is half the batch, so a second request goes out and finds the queue full.
    messages.next().await.unwrap().ack().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("the full queue is reported")
        .expect_err("no message was published");
    assert!(matches!(err, PullError::TooManyWaiting), "{err}");
    assert!(!err.is_final());
    publish(&js, 1).await;
    // Each later call asks again (one message owed is half the batch) and may be
    // refused again until the waiting request's message is in.
    let msg = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match messages.next().await {
                Ok(msg) => break msg,
                Err(PullError::TooManyWaiting) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the waiting request delivers");
    assert_eq!(msg.subject.as_str(), "in.1");
}
