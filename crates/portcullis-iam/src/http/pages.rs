//! Server-rendered pages of the login flow: sign-in, consent and messages
//! (errors that must not redirect, logout). askama templates under
//! `templates/`, auto-escaped; usable without JavaScript.
//!
//! Every page is sent with a strict policy: a CSP that allows nothing but
//! the page's own inline style (by hash), no framing (`frame-ancestors
//! 'none'` and `X-Frame-Options: DENY`), `no-store`, no referrer, no
//! sniffing.

use askama::Template;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use std::sync::OnceLock;

/// The one stylesheet, inline so pages need no second request.
const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.5 system-ui,sans-serif;background:#f4f5f7;color:#1d2430}\
main{max-width:24rem;margin:4rem auto;padding:2rem;background:#fff;border-radius:.5rem;box-shadow:0 1px 3px #0002}\
h1{margin:0 0 .25rem;font-size:1.5rem}\
.for{margin:0 0 1.5rem;color:#555}\
label{display:block;margin:1rem 0 .25rem;font-weight:600}\
input{width:100%;padding:.6rem;border:1px solid #b8bfca;border-radius:.3rem;font:inherit}\
button{margin-top:1.5rem;width:100%;padding:.7rem;border:0;border-radius:.3rem;background:#1f5fbf;color:#fff;font:inherit;font-weight:600;cursor:pointer}\
button.secondary{background:#e3e6eb;color:#1d2430;margin-top:.5rem}\
.error{padding:.6rem;border-radius:.3rem;background:#fdecec;color:#8a1c1c}\
.scopes{padding-left:1.2rem}";

/// The Content-Security-Policy of every page: the inline style by hash,
/// nothing else (no scripts at all).
fn csp() -> &'static HeaderValue {
    static CSP: OnceLock<HeaderValue> = OnceLock::new();
    CSP.get_or_init(|| {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest);
        let policy = format!(
            "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        );
        HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
    })
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTemplate<'a> {
    style: &'static str,
    action: &'a str,
    client_name: &'a str,
    request: &'a str,
    csrf: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentTemplate<'a> {
    style: &'static str,
    action: &'a str,
    client_name: &'a str,
    user: &'a str,
    scopes: &'a [&'a str],
    request: &'a str,
    csrf: &'a str,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessageTemplate<'a> {
    style: &'static str,
    title: &'a str,
    message: &'a str,
    is_error: bool,
}

/// The sign-in form.
pub struct Login<'a> {
    /// Where the form posts.
    pub action: &'a str,
    /// The client's display name.
    pub client_name: &'a str,
    /// The sealed pending authorization request.
    pub request: &'a str,
    /// The anti-CSRF token bound to the browser.
    pub csrf: &'a str,
    /// Prefilled username (`login_hint`, or the one just tried).
    pub username: &'a str,
    /// A message that never tells which of username and password was wrong.
    pub error: Option<&'a str>,
}

/// The consent form.
pub struct Consent<'a> {
    /// Where the form posts.
    pub action: &'a str,
    /// The client's display name.
    pub client_name: &'a str,
    /// Who is logged in.
    pub user: &'a str,
    /// The scopes asked for.
    pub scopes: &'a [&'a str],
    /// The sealed pending authorization request.
    pub request: &'a str,
    /// The anti-CSRF token bound to the browser.
    pub csrf: &'a str,
}

/// Renders the sign-in page (200, or 401 after a failed attempt).
pub fn login(p: &Login<'_>) -> Response {
    let status = match p.error {
        Some(_) => StatusCode::UNAUTHORIZED,
        None => StatusCode::OK,
    };
    render(
        status,
        LoginTemplate {
            style: STYLE,
            action: p.action,
            client_name: p.client_name,
            request: p.request,
            csrf: p.csrf,
            username: p.username,
            error: p.error,
        }
        .render(),
    )
}

/// Renders the consent page.
pub fn consent(p: &Consent<'_>) -> Response {
    render(
        StatusCode::OK,
        ConsentTemplate {
            style: STYLE,
            action: p.action,
            client_name: p.client_name,
            user: p.user,
            scopes: p.scopes,
            request: p.request,
            csrf: p.csrf,
        }
        .render(),
    )
}

/// An error page: for requests that must not be redirected (an unknown
/// client or a redirect URI that does not match), and for bad form posts.
pub fn error(status: StatusCode, title: &str, message: &str) -> Response {
    render(
        status,
        MessageTemplate {
            style: STYLE,
            title,
            message,
            is_error: true,
        }
        .render(),
    )
}

/// A plain message page (e.g. "signed out").
pub fn message(title: &str, message: &str) -> Response {
    render(
        StatusCode::OK,
        MessageTemplate {
            style: STYLE,
            title,
            message,
            is_error: false,
        }
        .render(),
    )
}

fn render(status: StatusCode, html: Result<String, askama::Error>) -> Response {
    let (status, html) = match html {
        Ok(h) => (status, h),
        Err(e) => {
            tracing::error!(error = %e, "page template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "<!doctype html><title>Error</title><p>Internal error.</p>".to_owned(),
            )
        }
    };
    let mut resp = Response::new(Body::from(html));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CONTENT_SECURITY_POLICY, csp().clone());
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn pages_escape_everything_they_are_given() {
        let evil = "\"><script>alert(1)</script>\r\nSet-Cookie: x=1";
        let r = login(&Login {
            action: "/oauth2/login",
            client_name: evil,
            request: evil,
            csrf: "c",
            username: evil,
            error: Some(evil),
        });
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("script-src"));
        let html = body(r).await;
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            !html.contains("\"><"),
            "an attribute was broken out of: {html}"
        );
        assert!(html.contains("alert(1)"), "the text is shown, escaped");
        assert!(html.contains(r#"name="username""#) && html.contains(r#"name="password""#));

        let html = body(error(StatusCode::BAD_REQUEST, evil, evil)).await;
        assert!(!html.contains("<script>"));
        let scopes = [evil];
        let html = body(consent(&Consent {
            action: "/oauth2/consent",
            client_name: evil,
            user: evil,
            scopes: &scopes,
            request: "r",
            csrf: "c",
        }))
        .await;
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn the_csp_hash_is_that_of_the_inline_style() {
        let csp = csp().to_str().unwrap();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, STYLE.as_bytes());
        let hash = base64::engine::general_purpose::STANDARD.encode(digest);
        assert!(csp.contains(&format!("'sha256-{hash}'")));
    }
}
