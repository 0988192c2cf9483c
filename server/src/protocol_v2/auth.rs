//! AUTH on a connection, and the authorization check SUB and the publishes make when an
//! auth server is configured (`--auth-http-address`). The HTTP query is [`crate::auth`].

use bytes::Bytes;
use protocol::identify::AuthResponse;
use protocol::v2::{self, ProtocolError};

use super::{Conn, Stream};
use crate::client::ConnState;

impl<S: Stream> Conn<S> {
    pub(super) async fn auth(&mut self, body: Bytes) -> Result<(), ProtocolError> {
        if self.client.state() != ConnState::Init {
            return Err(ProtocolError::fatal(
                "E_INVALID",
                "cannot AUTH in current state",
            ));
        }
        if self.auth.is_some() {
            return Err(ProtocolError::fatal("E_INVALID", "AUTH already set"));
        }
        if self.nsqd.opts().auth_http_addresses.is_empty() {
            return Err(ProtocolError::fatal("E_AUTH_DISABLED", "AUTH disabled"));
        }
        let secret = String::from_utf8_lossy(&body).to_string();
        let state = self.query_auth(&secret).await.map_err(|e| {
            tracing::warn!(client = self.client.id, error = %e, "auth server query failed");
            ProtocolError::fatal("E_AUTH_FAILED", "AUTH failed")
        })?;
        if state.authorizations.is_empty() {
            return Err(ProtocolError::fatal(
                "E_UNAUTHORIZED",
                "AUTH no authorizations found",
            ));
        }
        let resp = AuthResponse {
            identity: state.identity.clone(),
            identity_url: state.identity_url.clone(),
            permission_count: state.authorizations.len() as i64,
        };
        let json = serde_json::to_vec(&resp)
            .map_err(|_| ProtocolError::fatal("E_AUTH_FAILED", "AUTH failed"))?;
        {
            let mut info = self.client.info.lock();
            info.authed = true;
            info.auth_identity = state.identity.clone();
            info.auth_identity_url = state.identity_url.clone();
        }
        self.auth = Some(state);
        self.push_frame(v2::FRAME_TYPE_RESPONSE, &json);
        Ok(())
    }

    /// Ask the auth server about `secret` for this client's address and TLS state.
    async fn query_auth(&self, secret: &str) -> Result<crate::auth::AuthState, String> {
        let (remote_ip, tls) = {
            let info = self.client.info.lock();
            let ip = info
                .remote_address
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .unwrap_or_default();
            (ip, info.tls)
        };
        let opts = self.nsqd.opts();
        crate::auth::query(&self.nsqd, &opts, &remote_ip, tls, secret).await
    }

    /// Authorization check for SUB/PUB when an auth server is configured.
    pub(super) async fn check_auth(
        &mut self,
        cmd: &str,
        topic: &str,
        channel: &str,
    ) -> Result<(), ProtocolError> {
        if self.nsqd.opts().auth_http_addresses.is_empty() {
            return Ok(());
        }
        let Some(state) = self.auth.as_ref() else {
            return Err(ProtocolError::fatal(
                "E_AUTH_FIRST",
                format!("AUTH required before {cmd}"),
            ));
        };
        if state.expired() {
            // Refresh with the same secret, as NSQ does when the TTL runs out.
            let secret = state.secret.clone();
            let fresh = self
                .query_auth(&secret)
                .await
                .map_err(|_| ProtocolError::fatal("E_AUTH_FAILED", "AUTH failed"))?;
            self.auth = Some(fresh);
        }
        let allowed = self
            .auth
            .as_ref()
            .is_some_and(|s| s.is_authorized(topic, channel));
        if !allowed {
            return Err(ProtocolError::fatal(
                "E_UNAUTHORIZED",
                format!("AUTH failed for {cmd} on {topic:?} {channel:?}"),
            ));
        }
        Ok(())
    }
}
