//! A cookie-keeping, redirect-refusing browser for tests of browser flows
//! (the IAM sign-in pages, the gateway's BFF).

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::collections::HashMap;

/// One page load: status, `Location`, headers, body.
pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The value of a hidden form field.
    pub fn field(&self, name: &str) -> String {
        let marker = format!(r#"name="{name}" value=""#);
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap();
        self.body[start..start + end].to_owned()
    }

    /// The query parameters of the redirect.
    pub fn query(&self) -> HashMap<String, String> {
        let loc = self
            .location
            .as_deref()
            .unwrap_or_else(|| panic!("no redirect: {}", self.body));
        let url = url::Url::parse(loc).unwrap();
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// A browser: keeps cookies, follows nothing.
pub struct Browser {
    pub http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self {
            http: crate::http_client(),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, r: reqwest::RequestBuilder) -> Page {
        let jar: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let r = if jar.is_empty() {
            r
        } else {
            r.header("cookie", jar.join("; "))
        };
        let resp = r.send().await.unwrap();
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        Page {
            status: resp.status().as_u16(),
            location: resp
                .headers()
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned()),
            headers: resp.headers().clone(),
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let r = self.http.get(url);
        self.send(r).await
    }

    /// Submits the IAM sign-in form of `page` (its hidden `request` and
    /// `csrf` fields) to `login_url`.
    pub async fn sign_in(&mut self, login_url: &str, page: &Page, user: &str, pw: &str) -> Page {
        assert_eq!(page.status, 200, "{}", page.body);
        let (request, csrf) = (page.field("request"), page.field("csrf"));
        let form = [
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("username", user),
            ("password", pw),
        ];
        self.post(login_url, &form).await
    }

    pub async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let r = self.http.post(url).form(form);
        self.send(r).await
    }
}
