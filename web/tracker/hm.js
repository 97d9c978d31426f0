// The page tracker, served at /hm.js. This is its source: `npm run build` in web/ minifies it with
// esbuild into services/gateway/inkloop_gateway/static/hm.js (committed, so an installed gateway
// serves it without Node); `./dev check` fails when that file is not a fresh build of this one or
// is over 1 KB gzipped. Keep the source small too: every name below is shortened, but strings,
// property names and logic are shipped as written.
//
// Baidu-Tongji-compatible API. The page sets `var _hmt = _hmt || []` and may push commands before
// this script has loaded; they are replayed in order, then `_hmt.push(...)` runs commands at once:
//   ["_trackEvent", category, action, label?, value?, requestId?]
//                                 an event ("ev"). requestId is inkloop's addition: the request id
//                                 of the gateway job the event is about, so analytics can match the
//                                 front-end click with the back-end job.
//   ["_trackPageview", url?]      a page view ("pv") of url, else of location.href.
//   ["_setUserId", id]            the user id sent with every later batch.
//   ["_setCustomVar", index, name, value, scope]
//                                 name=value sent with every event recorded from now on (index and
//                                 scope are taken for compatibility and ignored).
//   ["_setAutoPageview", false]   no page view of its own on load (only effective while queued,
//                                 i.e. pushed before this script loads).
// Any other command is ignored.
//
// Wire format (services/gateway/inkloop_gateway/collect.py reads it): POST to the `data-api`
// attribute of this script's <script> tag (default /collect), a JSON body
//   {"sid": session, "uid": user, "lang": navigator.language, "scr": "1920x1080", "ev": [event, ...]}
// with each event {"id", "t", "type", "c", "a", "l", "v", "rid", "url", "ref", "cv"}; undefined
// fields are left out. A flush runs 1 s after the first event recorded since the last one and
// makes a batch of at most 50 events (more wait for the next flush). A batch whose fetch fails (no
// answer, or any answer but 2xx and 400, such as the gateway's 503 while analytics is down) is
// sent again with the same event ids (analytics counts an event id once), after 2 s, 4 s, … up to
// 30 s between tries. When the page is hidden or unloaded every unsent batch goes by sendBeacon.
//
// Privacy — what the tracker sends, and what never leaves the browser:
// - No cookie, no localStorage, no fingerprinting. The only thing stored is sessionStorage `_hms`
//   ("session id|time of the last send"), which lives in this tab only: the session id is random,
//   and a new one starts after 30 minutes without a send. The visitor id is made by the gateway
//   from the connection (a daily salted hash of IP and user agent, never stored as such).
// - About the device: only navigator.language and the screen size.
// - Labels are the one place where the page passes free text (e.g. "prompt <the user's prompt>").
//   A label is sent as written only when it looks like a code: at most 24 ASCII letters, digits or
//   `_ . : -` ("open", "before_generate", "png", "1024x1024", "seed:7"). Any other label — spaces,
//   non-ASCII (Chinese), longer text — is replaced by "h:" and the first 8 bytes of its SHA-256 in
//   hex: analytics can count and compare identical labels, and the text itself (a prompt, a file
//   name, an email) never leaves the browser. Where the browser has no SubtleCrypto (pages served
//   over plain http from a host other than localhost) such a label is sent as "h:" alone: dropped,
//   never sent in clear. The hash is not salted, so a short label that could be guessed could be
//   confirmed: it hides text, it does not make guessable values anonymous.
// - Categories, actions, values, request ids, custom variables, the user id, the page url and the
//   referrer are sent as given: the page must never put free text or personal data in them. (The
//   gateway drops the url's #fragment before storing it.)
//
// Written for the minifier: window, document and navigator are passed in so that it can shorten
// them; `let` throughout, which it merges into one declaration (it keeps each `const` apart); the
// commands as one if/else chain of expressions, which it turns into one conditional expression.
// `==` is deliberate, as in the hand-minified file this replaced (`x == null`: null or undefined).
((window, document, navigator) => {
  let queued = window._hmt;
  let crypto = window.crypto;
  let storage = sessionStorage;
  let endpoint = document.currentScript?.dataset.api || "/collect";
  // Events recorded and not yet in a batch.
  let buffer = [];
  // Batches made and not yet delivered: each an array of events, whose `inFlight_` is its fetch.
  let pending = [];
  let customVars = {};
  let userId = "";
  let autoPageview = true;
  // The scheduled flush (0: none).
  let timer = 0;
  // Delay before the next flush: 1 s, doubled after each failed send up to 30 s, back to 1 s after
  // a delivered one.
  let delay = 1000;
  // Events are recorded through one promise chain, so they keep their order although hashing a
  // label takes a moment.
  let chain = Promise.resolve();

  // A random UUID v4 (crypto.randomUUID needs a secure context; getRandomValues does not).
  let uuid = () =>
    "10000000-1000-4000-8000-100000000000".replace(/[018]/g, (digit) =>
      (digit ^ (crypto.getRandomValues(new Uint8Array(1))[0] & (15 >> (digit / 4)))).toString(16),
    );

  // The label as it may leave the browser (see "Privacy" above): itself when it is missing or a
  // short code, else a promise of "h:" + 16 hex digits of its SHA-256, or "h:" alone without
  // SubtleCrypto.
  let safeLabel = (label) => {
    if (label == null || /^[\w.:-]{0,24}$/.test(label)) return label;
    if (!crypto.subtle) return "h:";
    return crypto.subtle
      .digest("SHA-256", new TextEncoder().encode(label))
      .then((digest) => "h:" + [...new Uint8Array(digest, 0, 8)].map((byte) => (byte + 256).toString(16).slice(1)).join(""));
  };

  // A flush in `ms` (default: the current delay), unless one is already scheduled.
  let schedule = (ms) => {
    timer ||= setTimeout(flush, ms || delay);
  };

  // Up to 50 buffered events become a new batch; then every undelivered batch is sent, by
  // sendBeacon when `beacon` (the page is going away), else by fetch.
  let flush = (beacon) => {
    timer = 0;
    if (buffer.length) pending.push(buffer.splice(0, 50));
    pending.forEach((batch) => send(batch, beacon));
  };

  let delivered = (batch) => {
    pending = pending.filter((other) => other != batch);
  };

  let send = (batch, beacon) => {
    // The session: kept while sends are less than 30 minutes apart. No session yet: the
    // comparison is with NaN, false, so a new one.
    let session = (storage._hms || "").split("|");
    let now = Date.now();
    if (!(now - session[1] < 18e5)) session[0] = uuid();
    storage._hms = session[0] + "|" + now;
    let body = JSON.stringify({
      sid: session[0],
      uid: userId,
      lang: navigator.language,
      scr: screen.width + "x" + screen.height,
      ev: batch,
    });
    // A beacon the browser takes counts as delivered; one it refuses stays for the next flush.
    if (beacon) return navigator.sendBeacon(endpoint, body) && delivered(batch);
    // One fetch at a time per batch. 2xx: delivered. 400: the gateway refused the batch as
    // malformed, and sending it again would not change that: dropped. Any other answer (such as
    // the gateway's 503 while analytics is down) or none: sent again later, same event ids.
    batch.inFlight_ ||= fetch(endpoint, { method: "POST", body, keepalive: true })
      .then((response) => {
        if (!response.ok && response.status != 400) throw 0;
        delivered(batch);
        delay = 1000;
      })
      .catch(() => {
        delay = Math.min(delay * 2, 30000);
        batch.inFlight_ = 0;
        schedule(delay);
      });
  };

  // Records an event once its label is safe. Its id, time, url, referrer and custom variables are
  // those at that moment (customVars is replaced, never changed, so each event keeps its own).
  let record = (event, label) => {
    chain = chain
      .then(() => safeLabel(label))
      .then((safe) => {
        event.id = uuid();
        event.t = Date.now();
        event.url ||= location.href;
        event.ref = document.referrer;
        event.cv = customVars;
        event.l = safe;
        buffer.push(event);
        schedule();
      });
  };

  // Runs one command (the API above), its arguments by position.
  let run = ([command, first, second, third, fourth, fifth]) => {
    if (command == "_trackEvent")
      // category, action, label, value, request id
      record({ type: "ev", c: first, a: second, v: fourth, rid: fifth }, third == null ? third : "" + third);
    else if (command == "_trackPageview") record({ type: "pv", url: first });
    else if (command == "_setUserId") userId = "" + first;
    // index (ignored), name, value, scope (ignored)
    else if (command == "_setCustomVar") customVars = { ...customVars, [second]: "" + third };
    else if (command == "_setAutoPageview") autoPageview = first;
  };

  // The script included twice: the first copy already owns `_hmt` (k marks a loaded tracker; the
  // page's queue is a plain array).
  if (queued && queued.k) return;
  window._hmt = { k: 1, push: (...commands) => commands.forEach(run) };
  (queued || []).forEach(run);
  if (autoPageview) run(["_trackPageview"]);
  // Hidden (tab switched, phone locked) or unloaded: send everything now, by beacon.
  document.addEventListener("visibilitychange", () => document.hidden && flush(true));
  window.addEventListener("pagehide", () => flush(true));
})(window, document, navigator);
