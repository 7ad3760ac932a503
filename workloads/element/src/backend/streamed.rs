//! A body of a declared length handed to an outbound request while it still arrives, and a
//! watch over that request.
//!
//! The S3 SDK's timeouts run from sending a request to its answer's first byte, so on a streamed
//! body they would bound the whole transfer by the pace of the client sending it. The watch here
//! takes their place: it ends the request when the server stops taking bytes it has been
//! offered, or when its answer does not come after the last byte, for longer than `idle`. A
//! client that stops sending is the incoming connection's idle timeout's business; its body
//! then fails, and so does this one.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::ByteChunks;

/// Whom a streamed request waits on.
#[derive(Debug, Clone, Copy)]
enum Waiting {
    /// The incoming body: the server asked for more and there is none yet.
    Body,
    /// The server: it holds the last bytes it was given and has not asked again since.
    Server(Instant),
    /// The server's answer: every byte went out at that moment.
    Answer(Instant),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the body and its sender share. The body may outlive the request: an HTTP client can
/// keep a request's body in a connection stuck on a full socket after the request was dropped,
/// so the incoming stream and the end signal live here, where [`Outbound::abandon`] takes them.
struct Shared {
    chunks: Mutex<Option<ByteChunks>>,
    /// Told the size once the last byte has been handed over.
    ended: Mutex<Option<oneshot::Sender<u64>>>,
    /// The incoming body's own failure, kept so the sender can tell it from the server's.
    failure: Mutex<Option<io::Error>>,
    waiting: Mutex<Waiting>,
    /// The waker of a poll left waiting on the incoming body, woken by [`Outbound::abandon`]
    /// (the stream that would have woken it is gone then).
    parked: Mutex<Option<Waker>>,
}

/// The sender's side of a [`StreamedBody`].
#[derive(Clone)]
pub struct Outbound(Arc<Shared>);

impl Outbound {
    /// Resolves, with what went wrong, once the server has kept the request waiting for
    /// longer than `idle`; never while the request waits on the incoming body.
    pub async fn stalled(&self, idle: Duration) -> String {
        loop {
            let waiting = *lock(&self.0.waiting);
            let since = match waiting {
                Waiting::Body => None,
                Waiting::Server(since) | Waiting::Answer(since) => Some(since),
            };
            match since {
                Some(since) if since.elapsed() >= idle => {
                    return match waiting {
                        Waiting::Answer(_) => format!("the server did not answer for {idle:?}"),
                        _ => format!("the server took no bytes for {idle:?}"),
                    };
                }
                Some(since) => tokio::time::sleep_until(since + idle).await,
                None => tokio::time::sleep(idle).await,
            }
        }
    }

    /// Lets go of the incoming body and the end signal, whoever still holds the body.
    pub fn abandon(&self) {
        lock(&self.0.chunks).take();
        lock(&self.0.ended).take();
        if let Some(waker) = lock(&self.0.parked).take() {
            waker.wake();
        }
    }

    /// The incoming body's own failure, if it failed.
    pub fn body_failure(&self) -> Option<io::Error> {
        lock(&self.0.failure).take()
    }
}

/// The incoming body, as an outbound request's body of exactly its declared length.
pub struct StreamedBody {
    shared: Arc<Shared>,
    remaining: u64,
    sent: u64,
}

impl StreamedBody {
    /// `ended` is told the size once the last byte has been handed over.
    pub fn new(chunks: ByteChunks, length: u64, ended: oneshot::Sender<u64>) -> (Self, Outbound) {
        let shared = Arc::new(Shared {
            chunks: Mutex::new(Some(chunks)),
            ended: Mutex::new(Some(ended)),
            failure: Mutex::new(None),
            waiting: Mutex::new(Waiting::Server(Instant::now())),
            parked: Mutex::new(None),
        });
        let body = StreamedBody {
            shared: Arc::clone(&shared),
            remaining: length,
            sent: 0,
        };
        (body, Outbound(shared))
    }

    fn wait_on(&self, waiting: Waiting) {
        *lock(&self.shared.waiting) = waiting;
    }

    fn fail(&mut self, error: io::Error) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let told = io::Error::new(error.kind(), error.to_string());
        lock(&self.shared.failure).get_or_insert(error);
        lock(&self.shared.ended).take();
        Poll::Ready(Some(Err(told)))
    }

    fn handed_over(&mut self, chunk: Bytes) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let len = chunk.len() as u64;
        if len > self.remaining {
            return self.fail(io::Error::other("the body is longer than it declared"));
        }
        self.remaining -= len;
        self.sent += len;
        if self.remaining > 0 {
            self.wait_on(Waiting::Server(Instant::now()));
        } else {
            self.wait_on(Waiting::Answer(Instant::now()));
            if let Some(ended) = lock(&self.shared.ended).take() {
                let _ = ended.send(self.sent);
            }
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

impl http_body::Body for StreamedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        this.wait_on(Waiting::Body);
        let next = {
            let mut chunks = lock(&this.shared.chunks);
            let next = match chunks.as_mut() {
                Some(chunks) => chunks.poll_next_unpin(cx),
                None => {
                    return Poll::Ready(Some(Err(io::Error::other("the upload was abandoned"))));
                }
            };
            if next.is_pending() {
                // Under the stream's lock, so an abandon either sees this waker or came first.
                *lock(&this.shared.parked) = Some(cx.waker().clone());
            }
            next
        };
        match next {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => this.handed_over(chunk),
            Poll::Ready(Some(Err(error))) => this.fail(error),
            Poll::Ready(None) => {
                let short = this.remaining;
                this.fail(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the body ended {short} bytes short of its declared length"),
                ))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body;

    fn body_of(
        chunks: Vec<&'static [u8]>,
        length: u64,
    ) -> (StreamedBody, Outbound, oneshot::Receiver<u64>) {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, io::Error>(Bytes::from_static(c))),
        )
        .boxed();
        let (tx, rx) = oneshot::channel();
        let (body, outbound) = StreamedBody::new(stream, length, tx);
        (body, outbound, rx)
    }

    /// Every frame until the end or the first error.
    async fn drain(mut body: StreamedBody) -> Result<Vec<u8>, io::Error> {
        let mut collected = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            collected.extend_from_slice(frame?.data_ref().expect("data"));
        }
        Ok(collected)
    }

    #[tokio::test]
    async fn a_body_of_its_declared_length_reports_its_end() {
        let (body, outbound, ended) = body_of(vec![b"abc", b"de"], 5);
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(drain(body).await.expect("whole"), b"abcde");
        assert_eq!(ended.await.expect("told"), 5);
        assert!(outbound.body_failure().is_none());
    }

    #[tokio::test]
    async fn a_short_or_long_body_fails_as_the_bodys_own_failure() {
        for (chunks, length) in [(vec![&b"abc"[..]], 5), (vec![&b"abcdef"[..]], 5)] {
            let (body, outbound, ended) = body_of(chunks, length);
            assert!(drain(body).await.is_err());
            assert!(outbound.body_failure().is_some(), "kept for the sender");
            assert!(ended.await.is_err(), "no end is reported");
        }
    }

    #[tokio::test]
    async fn an_abandoned_body_lets_go_of_the_incoming_stream_and_reports_no_end() {
        let (body, outbound, ended) = body_of(vec![b"abc", b"de"], 5);
        outbound.abandon();
        assert!(drain(body).await.is_err());
        assert!(ended.await.is_err());
    }

    #[tokio::test]
    async fn abandoning_wakes_a_body_waiting_on_the_incoming_stream() {
        let (tx, _rx) = oneshot::channel();
        let (body, outbound) = StreamedBody::new(futures::stream::pending().boxed(), 5, tx);
        let drained = tokio::spawn(drain(body));
        tokio::time::sleep(Duration::from_millis(50)).await;
        outbound.abandon();
        let result = tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .expect("the waiting body is woken")
            .expect("joined");
        assert!(result.is_err(), "it ends with an error");
    }

    #[tokio::test]
    async fn the_watch_fires_on_a_server_that_stops_taking_bytes_not_on_a_slow_client() {
        let idle = Duration::from_millis(200);
        let (body, outbound, _ended) = body_of(vec![b"abc", b"de"], 5);
        body.wait_on(Waiting::Body);
        let waited = tokio::time::timeout(idle * 3, outbound.stalled(idle)).await;
        assert!(
            waited.is_err(),
            "waiting on the incoming body is not a stall"
        );
        body.wait_on(Waiting::Server(Instant::now()));
        let said = tokio::time::timeout(idle * 3, outbound.stalled(idle))
            .await
            .expect("a stall");
        assert!(said.contains("took no bytes"), "{said}");
        body.wait_on(Waiting::Answer(Instant::now()));
        let said = outbound.stalled(idle).await;
        assert!(said.contains("did not answer"), "{said}");
    }
}
