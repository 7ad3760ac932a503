//! A connection whose writes fail when the peer has taken no data for a while: a client that
//! stops reading a response (or a download) cannot hold a connection and its handler forever.
//!
//! Reads are not timed here: the request head has the HTTP server's header-read timeout and the
//! request body a per-frame timeout (`tower_http::timeout::RequestBodyTimeoutLayer`); a timer on
//! socket reads would also fire while a handler computes and the server merely watches the
//! socket for a close. Hand-written because the crates that wrap a stream in timeouts time the
//! whole pending period from the last byte, not from when a write started to wait.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct WriteStallTimeoutIo<T> {
    inner: T,
    limit: Duration,
    /// Armed when a write starts waiting, cleared when it moves.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteStallTimeoutIo<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        WriteStallTimeoutIo {
            inner,
            limit,
            stalled: None,
        }
    }

    fn waiting(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer took no data for {limit:?}"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteStallTimeoutIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteStallTimeoutIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Pending => this.waiting(cx).map(Err),
            ready => {
                this.stalled = None;
                ready
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.waiting(cx).map(Err),
            ready => {
                this.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
