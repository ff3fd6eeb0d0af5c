//! The rules of one Engine.IO session as a deterministic state machine.
//!
//! [`Session`] owns the heartbeat (when to ping, when a missing pong closes the
//! session), the transport state (polling, upgrading to websocket, websocket),
//! the long-polling request rules (one GET and one POST at a time) and the upgrade
//! deadline. It does no I/O and reads no clock: the runtime passes `now` in,
//! asks [`Session::poll_timeout`] when to wake next, and calls
//! [`Session::handle_timeout`] then, acting on the [`Timeout`]s it gets back.
//!
//! Heartbeat, as the reference server does it: the first ping goes out one
//! `pingInterval` after the handshake; after each ping the client has
//! `pingTimeout` to answer; a pong schedules the next ping `pingInterval` later.

use std::time::{Duration, Instant};

use super::handshake::{EngineError, Transport};
use super::packet::Packet;

/// Timing settings of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Time between a pong (or the handshake) and the next ping.
    pub ping_interval: Duration,
    /// Time the client has to answer a ping.
    pub ping_timeout: Duration,
    /// Time a websocket upgrade may take from the websocket's arrival to `5`.
    pub upgrade_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ping_interval: Duration::from_millis(25_000),
            ping_timeout: Duration::from_millis(20_000),
            upgrade_timeout: Duration::from_millis(10_000),
        }
    }
}

/// Why a session closed. The strings are the reference's disconnect reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// No pong within `pingTimeout`.
    PingTimeout,
    /// The client sent a close packet, or its connection closed.
    TransportClose,
    /// The connection failed, or the client broke a transport rule
    /// (overlapping polls, oversized payload).
    TransportError,
    /// The client sent a packet that could not be decoded or is not allowed.
    ParseError,
    /// The server closed the session on purpose (kick, limit, connect timeout).
    ForcedClose,
    /// The client did not read fast enough: its bounded outgoing queue filled.
    SlowConsumer,
    /// The server is shutting down.
    ServerShutdown,
    /// The credentials the client connected with expired (or their key was
    /// rotated out): it reconnects with fresh ones, and may recover.
    CredentialsExpired,
    /// An operator closed the client's connection (Node's
    /// `disconnectSockets(true)`): it reconnects by itself, and may recover.
    ServerClose,
}

impl CloseReason {
    /// The reference's reason string (what Socket.IO reports as disconnect reason).
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::ServerShutdown => "server shutting down",
            CloseReason::CredentialsExpired => "credentials expired",
            CloseReason::ServerClose => "forced server close",
        }
    }

    /// Whether the client lost the session without meaning to, so connection
    /// state recovery may restore it (the reference's recoverable reasons, plus
    /// a slow consumer, which is expected to reconnect and catch up).
    pub fn is_abnormal(self) -> bool {
        matches!(
            self,
            CloseReason::PingTimeout
                | CloseReason::TransportClose
                | CloseReason::TransportError
                | CloseReason::ServerShutdown
                | CloseReason::SlowConsumer
                | CloseReason::CredentialsExpired
                | CloseReason::ServerClose
        )
    }
}

/// Where the session's transport stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportState {
    /// Long-polling.
    Polling,
    /// Polling, with a websocket connected for this sid that has not finished
    /// the upgrade; `probed` once its `2probe` was answered.
    Upgrading {
        /// When the upgrade gives up.
        deadline: Instant,
        /// Whether `2probe` was received and answered.
        probed: bool,
    },
    /// WebSocket, from the start or after an upgrade.
    Websocket,
    /// Closed; nothing more happens.
    Closed(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Heartbeat {
    /// Next ping due at this instant.
    Idle { next_ping: Instant },
    /// A ping went out; a pong is due by this instant.
    AwaitingPong { deadline: Instant },
}

/// What a timeout asks the runtime to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Send a ping packet (`2`) on the active transport.
    SendPing,
    /// The upgrade took too long: close the probing websocket; the session stays on polling.
    UpgradeExpired,
    /// Close the session for this reason.
    Close(CloseReason),
}

/// What a packet from the active transport means for the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received<'a> {
    /// Hand this text message to the layer above.
    Message(&'a str),
    /// Hand this binary message to the layer above.
    Binary(&'a [u8]),
    /// Nothing to do (pong, noop).
    Nothing,
    /// Close the session for this reason.
    Close(CloseReason),
}

/// What a packet on the probing websocket asks the runtime to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAction {
    /// Answer `3probe` on the websocket and send a noop to any pending poll,
    /// so the client can pause polling.
    AnswerProbe,
    /// The upgrade is done: move the queue to the websocket; polling is over.
    Upgraded,
    /// The upgrade failed: close the websocket; the session stays on polling.
    Abort,
}

/// Which kind of polling request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollKind {
    /// A GET that waits for packets.
    Get,
    /// A POST that carries packets.
    Post,
}

/// One Engine.IO session's rules.
#[derive(Debug, Clone)]
pub struct Session {
    config: Config,
    transport: TransportState,
    heartbeat: Heartbeat,
    get_pending: bool,
    post_pending: bool,
}

impl Session {
    /// A session that completed its handshake at `now` over `transport`.
    pub fn new(config: Config, transport: Transport, now: Instant) -> Self {
        Session {
            config,
            transport: match transport {
                Transport::Polling => TransportState::Polling,
                Transport::Websocket => TransportState::Websocket,
            },
            heartbeat: Heartbeat::Idle { next_ping: now + config.ping_interval },
            get_pending: false,
            post_pending: false,
        }
    }

    /// The session's settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The transport state.
    pub fn transport(&self) -> TransportState {
        self.transport
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.transport, TransportState::Closed(_))
    }

    /// Whether packets currently go out through long-polling.
    pub fn writes_via_polling(&self) -> bool {
        matches!(self.transport, TransportState::Polling | TransportState::Upgrading { .. })
    }

    /// The next instant at which [`Session::handle_timeout`] has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_closed() {
            return None;
        }
        let hb = match self.heartbeat {
            Heartbeat::Idle { next_ping } => next_ping,
            Heartbeat::AwaitingPong { deadline } => deadline,
        };
        Some(match self.transport {
            TransportState::Upgrading { deadline, .. } => hb.min(deadline),
            _ => hb,
        })
    }

    /// Advances the clock to `now`; returns the next thing to do, or `None`
    /// when nothing is due. Call it until it returns `None`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Timeout> {
        if self.is_closed() {
            return None;
        }
        if let TransportState::Upgrading { deadline, .. } = self.transport
            && now >= deadline
        {
            self.transport = TransportState::Polling;
            return Some(Timeout::UpgradeExpired);
        }
        match self.heartbeat {
            Heartbeat::Idle { next_ping } if now >= next_ping => {
                self.heartbeat = Heartbeat::AwaitingPong { deadline: now + self.config.ping_timeout };
                Some(Timeout::SendPing)
            }
            Heartbeat::AwaitingPong { deadline } if now >= deadline => {
                Some(Timeout::Close(self.close(CloseReason::PingTimeout)))
            }
            _ => None,
        }
    }

    /// A packet arrived on the active transport (polling POST, or the websocket
    /// once it is the session's transport).
    pub fn on_packet<'p>(&mut self, now: Instant, packet: &'p Packet<'_>) -> Received<'p> {
        if self.is_closed() {
            return Received::Nothing;
        }
        match packet {
            Packet::Message(text) => Received::Message(text),
            Packet::Binary(data) => Received::Binary(data),
            Packet::Pong(_) => {
                if let Heartbeat::AwaitingPong { .. } = self.heartbeat {
                    self.heartbeat = Heartbeat::Idle { next_ping: now + self.config.ping_interval };
                }
                Received::Nothing
            }
            Packet::Noop | Packet::Upgrade => Received::Nothing,
            Packet::Close => Received::Close(self.close(CloseReason::TransportClose)),
            // In v4 only the server pings; the handshake only goes to clients.
            Packet::Ping(_) | Packet::Open(_) => Received::Close(self.close(CloseReason::ParseError)),
        }
    }

    /// A websocket request arrived for this session's sid: may it start an upgrade?
    pub fn begin_upgrade(&mut self, now: Instant) -> Result<(), EngineError> {
        match self.transport {
            TransportState::Polling => {
                self.transport =
                    TransportState::Upgrading { deadline: now + self.config.upgrade_timeout, probed: false };
                Ok(())
            }
            // Already upgrading, upgraded, or closed: the new websocket is refused.
            _ => Err(EngineError::BadRequest),
        }
    }

    /// A packet arrived on the websocket that is upgrading this session.
    pub fn on_probe_packet(&mut self, packet: &Packet<'_>) -> ProbeAction {
        let TransportState::Upgrading { deadline, probed } = self.transport else {
            return ProbeAction::Abort;
        };
        match packet {
            Packet::Ping("probe") if !probed => {
                self.transport = TransportState::Upgrading { deadline, probed: true };
                ProbeAction::AnswerProbe
            }
            Packet::Upgrade => {
                self.transport = TransportState::Websocket;
                ProbeAction::Upgraded
            }
            _ => {
                self.transport = TransportState::Polling;
                ProbeAction::Abort
            }
        }
    }

    /// The upgrading websocket went away before `5`: back to plain polling.
    pub fn abort_upgrade(&mut self) {
        if let TransportState::Upgrading { .. } = self.transport {
            self.transport = TransportState::Polling;
        }
    }

    /// Checks whether a request on `transport` (with this session's sid) may
    /// proceed. Polling requests are allowed while polling or upgrading;
    /// once on websocket they are refused (the reference's transport mismatch).
    pub fn check_transport(&self, transport: Transport) -> Result<(), EngineError> {
        match (self.transport, transport) {
            (TransportState::Closed(_), _) => Err(EngineError::UnknownSid),
            (TransportState::Polling | TransportState::Upgrading { .. }, Transport::Polling) => Ok(()),
            (_, Transport::Polling) => Err(EngineError::BadRequest),
            (TransportState::Polling, Transport::Websocket) => Ok(()),
            (_, Transport::Websocket) => Err(EngineError::BadRequest),
        }
    }

    /// A polling request starts. A second GET (or POST) while one is pending is
    /// an overlap: the request gets 400 and the session closes, as in the reference.
    pub fn start_poll(&mut self, kind: PollKind) -> Result<(), CloseReason> {
        if let Err(e) = self.check_transport(Transport::Polling) {
            return Err(match e {
                EngineError::UnknownSid => CloseReason::TransportClose,
                _ => CloseReason::TransportError,
            });
        }
        let pending = match kind {
            PollKind::Get => &mut self.get_pending,
            PollKind::Post => &mut self.post_pending,
        };
        if *pending {
            return Err(self.close(CloseReason::TransportError));
        }
        *pending = true;
        Ok(())
    }

    /// A polling request finished (answered or abandoned).
    pub fn end_poll(&mut self, kind: PollKind) {
        match kind {
            PollKind::Get => self.get_pending = false,
            PollKind::Post => self.post_pending = false,
        }
    }

    /// Whether a GET is waiting for packets.
    pub fn has_pending_get(&self) -> bool {
        self.get_pending
    }

    /// Closes the session for `reason` (the first reason sticks) and returns it.
    pub fn close(&mut self, reason: CloseReason) -> CloseReason {
        match self.transport {
            TransportState::Closed(first) => first,
            _ => {
                self.transport = TransportState::Closed(reason);
                reason
            }
        }
    }

    /// Why the session closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match self.transport {
            TransportState::Closed(r) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            ping_interval: Duration::from_millis(300),
            ping_timeout: Duration::from_millis(200),
            upgrade_timeout: Duration::from_millis(1000),
        }
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn first_ping_one_interval_after_the_handshake() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), Transport::Websocket, t0);
        assert_eq!(s.poll_timeout(), Some(ms(t0, 300)));
        assert_eq!(s.handle_timeout(t0), None);
        assert_eq!(s.handle_timeout(ms(t0, 299)), None);
        assert_eq!(s.handle_timeout(ms(t0, 300)), Some(Timeout::SendPing));
        assert_eq!(s.handle_timeout(ms(t0, 300)), None);
        assert_eq!(s.poll_timeout(), Some(ms(t0, 500)));
    }

    #[test]
    fn pong_schedules_the_next_ping() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), Transport::Websocket, t0);
        assert_eq!(s.handle_timeout(ms(t0, 300)), Some(Timeout::SendPing));
        assert_eq!(s.on_packet(ms(t0, 350), &Packet::Pong("")), Received::Nothing);
        assert_eq!(s.poll_timeout(), Some(ms(t0, 650)));
        assert_eq!(s.handle_timeout(ms(t0, 600)), None);
        assert_eq!(s.handle_timeout(ms(t0, 650)), Some(Timeout::SendPing));
    }

    #[test]
    fn missing_pong_closes_after_ping_timeout() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), Transport::Polling, t0);
        assert_eq!(s.handle_timeout(ms(t0, 300)), Some(Timeout::SendPing));
        assert_eq!(s.handle_timeout(ms(t0, 499)), None);
        assert_eq!(s.handle_timeout(ms(t0, 500)), Some(Timeout::Close(CloseReason::PingTimeout)));
        assert!(s.is_closed());
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.handle_timeout(ms(t0, 10_000)), None);
    }

    #[test]
    fn a_stray_pong_does_not_delay_the_ping() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), Transport::Websocket, t0);
        s.on_packet(ms(t0, 100), &Packet::Pong(""));
        assert_eq!(s.poll_timeout(), Some(ms(t0, 300)));
    }

    #[test]
    fn packets_on_the_active_transport() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), Transport::Websocket, t0);
        assert_eq!(s.on_packet(t0, &Packet::Message("hi")), Received::Message("hi"));
        assert_eq!(s.on_packet(t0, &Packet::Noop), Received::Nothing);
        assert_eq!(s.on_packet(t0, &Packet::Close), Received::Close(CloseReason::TransportClose));
        assert!(s.is_closed());
        assert_eq!(s.on_packet(t0, &Packet::Message("late")), Received::Nothing);

        let mut s = Session::new(cfg(), Transport::Websocket, t0);
        assert_eq!(s.on_packet(t0, &Packet::Ping("")), Received::Close(CloseReason::ParseError));
        assert_eq!(s.close_reason(), Some(CloseReason::ParseError));
        // The first reason sticks.
        assert_eq!(s.close(CloseReason::ForcedClose), CloseReason::ParseError);
    }

    #[test]
    fn upgrade_probe_then_upgrade() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), Transport::Polling, t0);
        assert_eq!(s.check_transport(Transport::Websocket), Ok(()));
        s.begin_upgrade(ms(t0, 10)).unwrap();
        assert!(s.writes_via_polling());
        assert_eq!(s.check_transport(Transport::Polling), Ok(()));
        assert_eq!(s.begin_upgrade(ms(t0, 20)), Err(EngineError::BadRequest));
        assert_eq!(s.on_probe_packet(&Packet::Ping("probe")), ProbeAction::AnswerProbe);
        assert_eq!(s.on_probe_packet(&Packet::Upgrade), ProbeAction::Upgraded);
        assert_eq!(s.transport(), TransportState::Websocket);
        assert!(!s.writes_via_polling());
        assert_eq!(s.check_transport(Transport::Polling), Err(EngineError::BadRequest));
        assert_eq!(s.check_transport(Transport::Websocket), Err(EngineError::BadRequest));
        assert_eq!(s.begin_upgrade(ms(t0, 30)), Err(EngineError::BadRequest));
        assert_eq!(s.start_poll(PollKind::Get), Err(CloseReason::TransportError));
        assert!(!s.is_closed(), "a refused poll after upgrade does not close the session");
    }

    #[test]
    fn upgrade_aborts_on_anything_else() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), Transport::Polling, t0);
        s.begin_upgrade(t0).unwrap();
        assert_eq!(s.on_probe_packet(&Packet::Message("x")), ProbeAction::Abort);
        assert_eq!(s.transport(), TransportState::Polling);
        s.begin_upgrade(t0).unwrap();
        assert_eq!(s.on_probe_packet(&Packet::Ping("probe")), ProbeAction::AnswerProbe);
        assert_eq!(s.on_probe_packet(&Packet::Ping("probe")), ProbeAction::Abort);
        s.begin_upgrade(t0).unwrap();
        s.abort_upgrade();
        assert_eq!(s.transport(), TransportState::Polling);
    }

    #[test]
    fn upgrade_expires() {
        let t0 = Instant::now();
        let mut s =
            Session::new(Config { upgrade_timeout: Duration::from_millis(100), ..cfg() }, Transport::Polling, t0);
        s.begin_upgrade(ms(t0, 50)).unwrap();
        assert_eq!(s.poll_timeout(), Some(ms(t0, 150)));
        assert_eq!(s.handle_timeout(ms(t0, 149)), None);
        assert_eq!(s.handle_timeout(ms(t0, 150)), Some(Timeout::UpgradeExpired));
        assert_eq!(s.transport(), TransportState::Polling);
        assert_eq!(s.poll_timeout(), Some(ms(t0, 300)));
    }

    #[test]
    fn overlapping_polls_close_the_session() {
        let t0 = Instant::now();
        let mut s = Session::new(cfg(), Transport::Polling, t0);
        s.start_poll(PollKind::Get).unwrap();
        s.start_poll(PollKind::Post).unwrap();
        assert!(s.has_pending_get());
        s.end_poll(PollKind::Post);
        s.start_poll(PollKind::Post).unwrap();
        assert_eq!(s.start_poll(PollKind::Get), Err(CloseReason::TransportError));
        assert!(s.is_closed());
        assert_eq!(s.check_transport(Transport::Polling), Err(EngineError::UnknownSid));
    }

    #[test]
    fn abnormal_reasons_are_the_recoverable_ones() {
        assert!(CloseReason::PingTimeout.is_abnormal());
        assert!(CloseReason::TransportClose.is_abnormal());
        assert!(CloseReason::TransportError.is_abnormal());
        assert!(!CloseReason::ParseError.is_abnormal());
        assert!(!CloseReason::ForcedClose.is_abnormal());
        assert!(CloseReason::SlowConsumer.is_abnormal());
        assert_eq!(CloseReason::PingTimeout.as_str(), "ping timeout");
    }
}
