//! The back-office over plain HTTP, as a browser speaks to it: the benchmarks sign in through the
//! login form (its cookie and CSRF token) and read pages with the session cookie.

use crate::DEMO_PASSWORD;

/// An agent that returns every status and follows no redirect (a redirect is an answer).
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// Percent-encodes a form value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the cookie `name` a response sets.
pub fn cookie_of(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get_all("set-cookie").iter().find_map(|c| {
        let first = c.to_str().ok()?.split(';').next()?.trim();
        let (k, v) = first.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

/// The CSRF token of a page's form.
pub fn csrf_in(page: &str) -> Option<String> {
    let at = page.find("name=\"_csrf\" value=\"")? + "name=\"_csrf\" value=\"".len();
    Some(page[at..].split('"').next()?.to_string())
}

/// Signs office1 in through the login form; returns the session cookie header value.
pub fn sign_in(base: &str) -> String {
    let agent = agent();
    let mut page = agent
        .get(format!("{base}/login"))
        .call()
        .expect("login page");
    let login_cookie = cookie_of(&page, "linli_login").expect("login form cookie");
    let body = page.body_mut().read_to_string().expect("login page body");
    let token = csrf_in(&body).expect("login form token");
    let form = format!(
        "_csrf={}&username=office1&password={}",
        enc(&token),
        enc(DEMO_PASSWORD)
    );
    let resp = agent
        .post(format!("{base}/login"))
        .header("Cookie", &format!("linli_login={login_cookie}"))
        .content_type("application/x-www-form-urlencoded")
        .send(form)
        .expect("login post");
    assert_eq!(resp.status().as_u16(), 303, "signing in failed");
    let session = cookie_of(&resp, "linli_session").expect("session cookie");
    format!("linli_session={session}")
}
