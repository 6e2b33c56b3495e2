//! A back-office browser session over plain HTTP (no JavaScript): signs in through the login
//! form, keeps the session cookie, reads the CSRF token from pages and posts forms, without
//! following redirects so the stories see each answer.

use super::DEMO_PASSWORD;

/// An HTTP answer: status, `Location`, `Set-Cookie` values and body.
pub struct Answer {
    pub status: u16,
    pub location: Option<String>,
    pub cookies: Vec<String>,
    pub body: String,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

fn answer(mut r: ureq::http::Response<ureq::Body>) -> Answer {
    let header = |name: &str| -> Vec<String> {
        r.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(String::from)
            .collect()
    };
    let location = header("location").into_iter().next();
    let cookies = header("set-cookie");
    Answer {
        status: r.status().as_u16(),
        location,
        cookies,
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn cookie_of(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find_map(|c| {
        let first = c.split(';').next()?.trim();
        let (k, v) = first.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_string())
    })
}

/// The value of the first `name="_csrf" value="…"` in a page.
pub fn csrf_in(page: &str) -> Option<String> {
    let at = page.find("name=\"_csrf\" value=\"")? + "name=\"_csrf\" value=\"".len();
    Some(page[at..].split('"').next()?.to_string())
}

/// Form-encodes pairs.
pub fn form(fields: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push('&');
        }
        s.push_str(&enc(k));
        s.push('=');
        s.push_str(&enc(v));
    }
    s
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A signed-in browser.
pub struct Web {
    pub base: String,
    pub cookie: String,
    pub csrf: String,
}

/// Signs `user` in through the form: the session, or the refusal's answer.
pub fn sign_in(base: &str, user: &str) -> Result<Web, Answer> {
    let agent = agent();
    let page = answer(agent.get(&format!("{base}/login")).call().unwrap());
    assert_eq!(page.status, 200);
    let login_cookie = cookie_of(&page.cookies, "linli_login").expect("login form cookie");
    let token = csrf_in(&page.body).expect("login form token");
    let r = answer(
        agent
            .post(&format!("{base}/login"))
            .header("Cookie", &format!("linli_login={login_cookie}"))
            .content_type("application/x-www-form-urlencoded")
            .send(form(&[
                ("_csrf", &token),
                ("username", user),
                ("password", DEMO_PASSWORD),
            ]))
            .unwrap(),
    );
    let Some(session) = cookie_of(&r.cookies, "linli_session").filter(|_| r.status == 303) else {
        return Err(r);
    };
    let mut web = Web {
        base: base.to_string(),
        cookie: format!("linli_session={session}"),
        csrf: String::new(),
    };
    let home = web.get("/office/records");
    assert_eq!(home.status, 200, "{}", home.body);
    web.csrf = csrf_in(&home.body).expect("pages carry the CSRF token");
    Ok(web)
}

impl Web {
    /// `GET path` with the session cookie.
    pub fn get(&self, path: &str) -> Answer {
        answer(
            agent()
                .get(&format!("{}{path}", self.base))
                .header("Cookie", &self.cookie)
                .call()
                .unwrap(),
        )
    }

    /// `GET path` with the session cookie: status and body bytes (a download).
    pub fn get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let mut r = agent()
            .get(&format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .call()
            .unwrap();
        linli_tests::status_and_bytes(&mut r)
    }

    /// `POST path` with the session cookie and these fields (the CSRF token is not added).
    pub fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        answer(
            agent()
                .post(&format!("{}{path}", self.base))
                .header("Cookie", &self.cookie)
                .content_type("application/x-www-form-urlencoded")
                .send(form(fields))
                .unwrap(),
        )
    }

    /// `POST path` as a form of the page would: with the session's CSRF token.
    pub fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let mut all = vec![("_csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all)
    }
}
