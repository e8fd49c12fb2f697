//! Registry token auth: the Authorization a request goes with first
//! (a cached bearer token, or Basic where the upstream asked for it), and a
//! new token fetched when the upstream challenges.

use super::*;

#[derive(Clone)]
pub(super) struct Token {
    value: Secret,
    expires: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<Secret>,
    #[serde(default)]
    access_token: Option<Secret>,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn basic_value(c: &Credentials) -> HeaderValue {
    use base64::Engine;
    let raw = format!("{}:{}", c.username, c.password.expose());
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut v =
        HeaderValue::from_str(&format!("Basic {encoded}")).unwrap_or(HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

fn bearer_value(token: &Secret) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).ok()?;
    v.set_sensitive(true);
    Some(v)
}

impl Upstream {
    /// The Authorization value to send before any challenge, if one is known.
    pub(super) async fn cached_auth(
        &self,
        scope: &str,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        if self.basic_only.load(Ordering::Relaxed) {
            let (creds, _) = self
                .credentials
                .current()
                .await
                .map_err(UpstreamError::credentials)?;
            return Ok(creds.map(|c| basic_value(&c)));
        }
        let (_, generation) = self
            .credentials
            .current()
            .await
            .map_err(UpstreamError::credentials)?;
        Ok(self
            .tokens
            .get(&format!("{generation} {scope}"))
            .filter(|t| t.expires > Instant::now())
            .and_then(|t| bearer_value(&t.value)))
    }

    pub(super) async fn answer(
        &self,
        challenge: Option<Challenge>,
        scope: &str,
    ) -> Result<HeaderValue, UpstreamError> {
        let (creds, mut generation) = self
            .credentials
            .current()
            .await
            .map_err(UpstreamError::credentials)?;
        match challenge {
            Some(Challenge::Basic) => {
                let creds = creds.ok_or(UpstreamError::Unauthorized)?;
                self.basic_only.store(true, Ordering::Relaxed);
                Ok(basic_value(&creds))
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope: challenged,
            }) => {
                let wanted = challenged.unwrap_or_else(|| scope.to_string());
                let token = match self
                    .fetch_token(&realm, service.as_deref(), &wanted, creds.as_ref())
                    .await
                {
                    // A helper's token may have been rotated since it was
                    // asked: ask again once, then try with the answer.
                    Err(UpstreamError::Unauthorized) if self.credentials.is_helper() => {
                        self.credentials.refused();
                        let (fresh, g) = self
                            .credentials
                            .current()
                            .await
                            .map_err(UpstreamError::credentials)?;
                        generation = g;
                        self.fetch_token(&realm, service.as_deref(), &wanted, fresh.as_ref())
                            .await?
                    }
                    other => other?,
                };
                let value = bearer_value(&token.value).ok_or_else(|| {
                    UpstreamError::BadResponse("token is not a header value".into())
                })?;
                self.tokens.insert(format!("{generation} {scope}"), token);
                Ok(value)
            }
            None => Err(UpstreamError::BadResponse(
                "401 without a usable WWW-Authenticate challenge".into(),
            )),
        }
    }

    pub(super) async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        creds: Option<&Credentials>,
    ) -> Result<Token, UpstreamError> {
        let mut url = reqwest::Url::parse(realm)
            .map_err(|_| UpstreamError::BadResponse("token realm is not a URL".into()))?;
        let host_allowed = url
            .host_str()
            .is_some_and(|h| self.realm_hosts.iter().any(|a| a.eq_ignore_ascii_case(h)));
        let scheme_allowed = url.scheme() == "https" || url.scheme() == self.base.scheme();
        if !host_allowed || !scheme_allowed {
            tracing::warn!(upstream = %self.name, realm_host = url.host_str().unwrap_or(""), "token realm refused: host not allowed for this upstream");
            return Err(UpstreamError::RealmRefused);
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = service {
                q.append_pair("service", service);
            }
            q.append_pair("scope", scope);
        }
        let mut request = self.http.get(url);
        if let Some(c) = creds {
            request = request.basic_auth(&c.username, Some(c.password.expose()));
        }
        self.count("token");
        let response = self.timed(request.send()).await?;
        let mut response = self.check_status(response).await?;
        let body = read_limited(&mut response, MAX_AUX_BYTES).await?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::BadResponse("token response is not JSON".into()))?;
        let value = parsed
            .token
            .or(parsed.access_token)
            .ok_or_else(|| UpstreamError::BadResponse("token response has no token".into()))?;
        let lifetime = parsed.expires_in.unwrap_or(60).max(60);
        Ok(Token {
            value,
            expires: Instant::now() + Duration::from_secs(lifetime.saturating_sub(10)),
        })
    }
}
