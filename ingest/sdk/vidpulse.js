/*
 * vidpulse player SDK: tracks one HTML5 <video> and posts beacon protocol v1 batches to a vidpulse tracker
 * (shared/spec/beacon-protocol.md; usage and options in ingest/sdk/README.md). No dependencies; never throws
 * into the page (every entry point is guarded), never blocks playback (passive listeners, async sends).
 *
 *   import { attach } from "https://tracker.example/sdk/vidpulse.mjs";  // or <script src=".../vidpulse.js">
 *   const handle = attach(video, {endpoint, account, player, video: "id", live, user});  // window.vidpulse
 *   handle.adStart({serverSide: true});  handle.destroy();
 *   const badge = liveViewers(element, {account, video: "id", key: "vp_pk_..."});  badge.stop();
 *   <vidpulse-viewers account="1234" video="5555" key="vp_pk_..."></vidpulse-viewers>
 *
 * Session: one per playback of one source; a source change or a replay after `ended` starts a new one.
 * Watched time: content seconds the playhead advanced between samples while playing (not paused, seeking
 * or stalled), and no faster than the wall clock allows; seeks and stalls never count.
 * Delivery: events queue and are batched per session. Regular flushes use fetch(keepalive): on a network
 * error, 408, 429 or 5xx the same events (same ids) are sent again after a back-off (1 s doubling to 60 s,
 * or Retry-After); another 4xx drops the batch. On pagehide or a hidden page the whole queue goes out by
 * navigator.sendBeacon (text/plain, no preflight), counted as sent once the browser accepts it (delivery
 * cannot be observed). The tracker counts a re-sent event once. At most `maxQueue` events wait; the oldest go.
 */
/* Classic-script build of vidpulse.mjs by ingest/sdk/build.py: do not edit by hand. */
(function (global) {
  "use strict";

  const ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
  const IDENT = /^[A-Za-z0-9_-]{1,64}$/;
  const CONTROL = /[\x00-\x1f\x7f-\x9f]/g; // eslint-disable-line no-control-regex
  const MEDIA_ERRORS = ["", "MEDIA_ERR_ABORTED", "MEDIA_ERR_NETWORK", "MEDIA_ERR_DECODE", "MEDIA_ERR_SRC_NOT_SUPPORTED"];
  const QUARTILES = [25, 50, 75, 100];
  const MAX_MS = 600000; // the protocol's bound on watched_ms, startup_ms, duration_ms
  const JUMP_SLACK_S = 0.5; // playhead advance beyond wall-clock time × rate + this is a jump, not playback
  const SEEK_GAP_S = 0.25; // at most this much playback is credited between the last sample and a seek
  const MAX_BODY_CHARS = 48000; // under the tracker's 64 KiB and the browsers' keepalive/beacon quota
  const DEFAULTS = { batchMs: 1000, maxBatch: 50, maxQueue: 500, heartbeatMs: 10000 };
  const SCRIPT_URL = (document.currentScript && document.currentScript.src) || location.href; // build.py swaps this line for the classic script

  const version = "1";

  function warn(error) {
    try { console.warn("[vidpulse]", error); } catch (_) { /* no console */ }
  }
  function guard(fn) {
    return function guarded(...args) {
      try { return fn.apply(this, args); } catch (error) { warn(error); return undefined; }
    };
  }
  function clean(value, max) {
    return String(value == null ? "" : value).replace(CONTROL, " ").trim().slice(0, max);
  }
  function clampMs(ms) {
    return Math.max(0, Math.min(MAX_MS, Math.round(ms)));
  }

  function randomId(length = 32) {
    const bytes = new Uint8Array(length);
    if (globalThis.crypto && crypto.getRandomValues) crypto.getRandomValues(bytes);
    else for (let i = 0; i < length; i++) bytes[i] = Math.floor(Math.random() * 256);
    let id = "";
    for (const byte of bytes) id += ID_CHARS[byte & 63];
    return id;
  }

  function timeZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || undefined; } catch (_) { return undefined; }
  }

  /** The tracker's /v1/track URL: `endpoint` (its base URL or the full URL), else where this SDK was served from. */
  function trackUrl(endpoint) {
    const url = new URL(endpoint || "/v1/track", endpoint ? location.href : SCRIPT_URL);
    if (!/\/v1\/track$/.test(url.pathname)) url.pathname = url.pathname.replace(/\/*$/, "/v1/track");
    return url.href;
  }

  /** The queue and its delivery; see the header for the retry semantics. */
  function createSender(url, cfg) {
    const queue = []; // {env, event}, oldest first; removed only once delivered (or given up)
    let timer = null, inflight = false, failures = 0, retryAt = 0, onIdle = null;

    function push(env, event) {
      queue.push({ env, event });
      if (queue.length > cfg.maxQueue) queue.splice(0, queue.length - cfg.maxQueue);
      schedule(cfg.batchMs);
    }

    function schedule(ms) {
      if (timer || !queue.length) return;
      timer = setTimeout(guard(() => { timer = null; flush(); }), Math.max(ms, retryAt - Date.now(), 0));
    }

    function batch(items) { // the oldest session's events, small enough for one request
      const env = items[0].env;
      let chosen = items.filter((item) => item.env === env).slice(0, cfg.maxBatch);
      let body;
      for (;;) {
        body = JSON.stringify({ ...env.envelope(), sent_at: Date.now(), events: chosen.map((item) => item.event) });
        if (body.length <= MAX_BODY_CHARS || chosen.length === 1) return { chosen, body };
        chosen = chosen.slice(0, Math.ceil(chosen.length / 2));
      }
    }

    function remove(items) {
      for (const item of items) if (queue.includes(item)) queue.splice(queue.indexOf(item), 1);
      if (!queue.length && onIdle) onIdle();
    }

    function failed(retryAfter) {
      failures += 1;
      const asked = retryAfter == null ? NaN : (isFinite(retryAfter) ? retryAfter * 1000 : Date.parse(retryAfter) - Date.now());
      const backoff = Math.min(60000, 1000 * 2 ** (failures - 1));
      retryAt = Date.now() + (asked > 0 ? Math.min(asked, 300000) : backoff);
    }

    function flush() {
      if (inflight || !queue.length) return;
      if (Date.now() < retryAt) { schedule(0); return; }
      const { chosen, body } = batch(queue);
      if (typeof fetch !== "function") { if (beacon(body)) remove(chosen); else failed(); schedule(0); return; }
      inflight = true;
      fetch(url, { method: "POST", body, keepalive: true, mode: "cors", credentials: "omit",
        headers: { "Content-Type": "text/plain" } })
        .then((response) => {
          const retry = response.status === 408 || response.status === 429 || response.status >= 500;
          if (!retry) { failures = 0; retryAt = 0; remove(chosen); }
          if (!retry && !response.ok) warn(`tracker refused a batch (${response.status}); dropped`);
          if (retry) failed(response.headers.get("Retry-After"));
        }, () => failed())
        .catch(warn)
        .then(() => { inflight = false; schedule(0); });
    }

    function beacon(body) {
      try {
        return typeof navigator !== "undefined" && typeof navigator.sendBeacon === "function"
          && navigator.sendBeacon(url, new Blob([body], { type: "text/plain" }));
      } catch (_) { return false; }
    }

    function exit() { // page is going away: everything queued (in flight too) leaves now
      const pending = queue.slice();
      while (pending.length) {
        const { chosen, body } = batch(pending);
        pending.splice(0, pending.length, ...pending.filter((item) => !chosen.includes(item)));
        if (beacon(body)) remove(chosen);
      }
      schedule(0);
    }

    return { push, flush, exit, size: () => queue.length, whenIdle(fn) { onIdle = fn; if (!queue.length) fn(); } };
  }

  function track(el, options) {
    if (!el || typeof el.addEventListener !== "function" || !("currentTime" in el)) {
      throw new TypeError("vidpulse.attach(video, options): video must be an HTML media element");
    }
    const account = clean(options.account, 64);
    if (!IDENT.test(account)) throw new TypeError("vidpulse: options.account must be 1-64 chars of [A-Za-z0-9_-]");
    const cfg = { ...DEFAULTS, ...options }, sender = createSender(trackUrl(options.endpoint), cfg);
    const player = clean(options.player || "vidpulse-web", 64), user = clean(options.user, 128) || undefined;
    let s = null; // the current session
    let clock = null; // last playhead sample: {pos, wall}
    let running = false, destroyed = false; // running: between `playing` and pause/waiting/seeking/ended

    function newSession(impression) {
      const videoId = typeof options.video === "function" ? options.video(el) : options.video;
      const session = s = {
        id: randomId(), seq: 0, src: el.currentSrc || null, video: clean(videoId, 128) || "unknown",
        live: Boolean(options.live), page: clean(location.href, 2048), duration: undefined,
        viewAt: null, framed: false, open: false, ended: false, stallAt: null,
        watchedMs: 0, points: [], quartiles: new Set(), lastBeat: 0,
      };
      session.env = { envelope: () => ({ v: 1, account, player, session: session.id, video: session.video, live: session.live,
        context: { tz: timeZone(), user, page: session.page, duration: session.duration } }) };
      durationChange();
      if (impression) emit("impression");
    }

    function emit(type, fields) {
      if (!s) return;
      if (type !== "impression") s.open = type !== "stop";
      sender.push(s.env, { id: String(++s.seq), type, ts: Date.now(), ...fields });
    }

    function played(from, to) { // real playback from→to (content seconds): watched time, percentiles, quartiles
      s.watchedMs += (to - from) * 1000;
      const length = el.duration;
      if (!(length > 0 && isFinite(length))) return;
      const atEnd = to >= length - 0.001;
      const percent = (t) => (t <= 0.05 ? 0 : (t * 100) / length); // media often starts a few ms in
      const last = atEnd ? 100 : Math.ceil(percent(to)) - 1;
      for (let k = Math.ceil(percent(from)); k <= last && s.points.length < 1000; k++) s.points.push(k);
      const reached = atEnd ? 100 : (to * 100) / length;
      for (const q of QUARTILES) {
        if (reached >= q && !s.quartiles.has(q)) { s.quartiles.add(q); emit("quartile", { percent: q }); }
      }
    }

    function sample() {
      const now = performance.now(), pos = el.currentTime;
      if (s && clock && running && !el.seeking) { // only while playing: a paused frame snap can move currentTime
        const advance = pos - clock.pos, allowed = ((now - clock.wall) / 1000) * Math.abs(el.playbackRate) + JUMP_SLACK_S;
        if (advance > 0 && advance <= allowed) played(clock.pos, pos);
      }
      clock = { pos, wall: now };
    }

    function progress(type) { // heartbeat or stop: the watched time and percentiles since the previous one
      const watched = Math.min(MAX_MS, Math.floor(s.watchedMs));
      s.watchedMs -= watched;
      s.lastBeat = Date.now();
      const position = clock ? clock.pos : el.currentTime;
      emit(type, { watched_ms: watched, position: isFinite(position) ? Math.round(position * 1000) / 1000 : undefined,
        percentiles: s.points.length ? s.points.splice(0) : undefined });
    }

    function stopIfOpen() {
      if (s && s.viewAt != null && (s.open || s.watchedMs >= 1 || s.points.length)) progress("stop");
    }

    function durationChange() { if (s && isFinite(el.duration) && el.duration >= 0) s.duration = el.duration; }

    const media = {
      loadstart() { if (!s) newSession(true); if (!s.src) s.src = el.currentSrc || null; },
      emptied() { // the source changed or was reloaded: that playback is over
        if (!s || !s.src) return;
        stopIfOpen();
        s = null; clock = null; running = false;
      },
      durationchange: durationChange,
      loadedmetadata: durationChange,
      play() {
        if (!s) newSession(true);
        if (s.ended) newSession(false); // a replay is a new playback
        sample();
        if (s.viewAt == null) { s.viewAt = performance.now(); s.lastBeat = Date.now(); emit("view"); }
      },
      playing() {
        sample(); running = true;
        if (!s || s.viewAt == null) return;
        if (!s.framed) { s.framed = true; emit("first_frame", { startup_ms: clampMs(performance.now() - s.viewAt) }); }
        if (s.stallAt != null) { emit("rebuffer", { duration_ms: clampMs(performance.now() - s.stallAt) }); s.stallAt = null; }
      },
      waiting() {
        sample(); running = false;
        if (s && s.framed && !el.seeking && s.stallAt == null) s.stallAt = performance.now();
      },
      pause() { sample(); running = false; if (s) s.stallAt = null; },
      seeking() { // currentTime already holds the target: credit the moments since the last sample, then restart
        if (s && clock && running) {
          const gap = Math.min(((performance.now() - clock.wall) / 1000) * el.playbackRate, SEEK_GAP_S);
          const end = Math.min(clock.pos + gap, isFinite(el.duration) ? el.duration : Infinity);
          if (end > clock.pos) played(clock.pos, end);
        }
        clock = null; running = false; if (s) s.stallAt = null;
      },
      seeked() { sample(); running = !el.paused && el.readyState >= 3; },
      timeupdate: sample,
      ended() {
        sample(); running = false;
        if (s) { s.stallAt = null; stopIfOpen(); s.ended = true; }
      },
      error() {
        const error = el.error;
        if (!error || !s) return;
        emit("error", { code: MEDIA_ERRORS[error.code] || `MEDIA_ERR_${error.code}`, message: clean(error.message, 256) || undefined,
          fatal: true });
      },
    };

    function tick() {
      if (!s) return;
      sample();
      if (s.viewAt != null && !s.ended && !el.paused && Date.now() - s.lastBeat >= cfg.heartbeatMs) progress("heartbeat");
    }

    function onExit(event) {
      if (event.type === "visibilitychange" && document.visibilityState !== "hidden") return;
      if (!destroyed && s) { // pagehide often follows a hidden page: a second stop only for real news
        sample();
        if (s.open || s.watchedMs >= 250) progress("stop");
      }
      sender.exit();
    }

    const handlers = {};
    for (const name of Object.keys(media)) {
      handlers[name] = guard(media[name]);
      el.addEventListener(name, handlers[name], { passive: true });
    }
    const exitHandler = guard(onExit);
    addEventListener("pagehide", exitHandler);
    document.addEventListener("visibilitychange", exitHandler);
    const ticker = setInterval(guard(tick), 1000);

    if (el.currentSrc || typeof options.video !== "function") newSession(true); // else once the source is known
    if (s && !el.paused) { media.play(); s.framed = running = el.readyState >= 3; } // late: startup unknown

    return {
      get session() { return s ? s.id : null; },
      get pending() { return sender.size(); },
      adStart: guard((adOptions) => emit("ad_start", { server_side: Boolean(adOptions && adOptions.serverSide) })),
      flush: guard(() => sender.flush()),
      destroy: guard(() => {
        if (destroyed) return;
        sample(); stopIfOpen();
        destroyed = true;
        clearInterval(ticker);
        for (const name of Object.keys(handlers)) el.removeEventListener(name, handlers[name]);
        sender.flush();
        sender.whenIdle(() => { // keep the page-exit flush until what is queued got out
          removeEventListener("pagehide", exitHandler);
          document.removeEventListener("visibilitychange", exitHandler);
        });
      }),
    };
  }

  /** Starts tracking `video`; returns a handle with destroy() and adStart({serverSide}). Never throws. */
  function attach(video, options) {
    try { return track(video, options || {}); } catch (error) {
      warn(error);
      return { session: null, pending: 0, adStart() {}, flush() {}, destroy() {} };
    }
  }

  /*
   * Live viewers badge: "1,234 watching" for one video, pushed by the API's /v1/live channel over a WebSocket.
   * The key travels as a Sec-WebSocket-Protocol value (["vidpulse", key]), never in a URL. The socket is opened
   * again after any close (1 s doubling to 30 s, ±25 % jitter, reset by a message with viewers), except after a
   * refusal retrying cannot heal (4400, 4401, 4403: the text is cleared and a warning logged). A socket silent
   * for longer than three keep-alives is taken for dead and replaced. Usage and limits in README.md.
   */
  const LIVE_DEFAULTS = { label: "watching", minDelayMs: 1000, maxDelayMs: 30000, silenceMs: 35000 };
  const FINAL_CLOSES = [4400, 4401, 4403]; // bad question, unknown or revoked key, key not allowed: retrying cannot help
  const PUBLIC_KEY = /^vp_pk_[A-Za-z0-9_-]{1,200}$/;
  const BADGE_TAG = "vidpulse-viewers";
  const BADGE_ATTRIBUTES = ["account", "video", "key", "endpoint", "label", "locale"];

  /** The API's /v1/live WebSocket URL: `endpoint` (its base URL; a path from /v1/ on is dropped), else the
   *  origin this SDK was served from. */
  function liveUrl(endpoint, account, video) {
    const url = new URL(endpoint || "/", endpoint ? location.href : SCRIPT_URL);
    const base = url.pathname.replace(/\/v1(\/.*)?$/, "").replace(/\/+$/, "");
    url.protocol = url.protocol === "https:" || url.protocol === "wss:" ? "wss:" : "ws:";
    url.pathname = `${base}/v1/live/accounts/${encodeURIComponent(account)}`;
    url.search = `?where=${encodeURIComponent(`video==${video}`)}&fields=viewers`;
    url.hash = "";
    return url.href;
  }

  function numberFormat(locale) {
    try { const format = new Intl.NumberFormat(locale || undefined); return (n) => format.format(n); } catch (_) {
      return (n) => String(n);
    }
  }

  function watchViewers(el, options) {
    if (!el || typeof el.setAttribute !== "function" || !("textContent" in el)) {
      throw new TypeError("vidpulse.liveViewers(element, options): element must be a DOM element");
    }
    const account = clean(options.account, 64), video = clean(options.video, 128), key = clean(options.key, 256);
    if (!IDENT.test(account)) throw new TypeError("vidpulse.liveViewers: account must be 1-64 chars of [A-Za-z0-9_-]");
    if (!video || /[,;]/.test(video)) throw new TypeError("vidpulse.liveViewers: video must be one video id (no , or ;)");
    if (!PUBLIC_KEY.test(key)) {
      throw new TypeError(/^vp_sk_/.test(key) ? "vidpulse.liveViewers: a secret key must never be put in a page; "
        + "create a public key for this video, the metric ccu and this page's origin" : "vidpulse.liveViewers: key must be a public key (vp_pk_...)");
    }
    if (typeof WebSocket !== "function") throw new TypeError("vidpulse.liveViewers: this browser has no WebSocket");
    const cfg = { ...LIVE_DEFAULTS, ...options }, url = liveUrl(options.endpoint, account, video);
    const label = typeof options.label === "function" ? options.label : options.label == null ? cfg.label : String(options.label);
    const format = numberFormat(options.locale);
    let socket = null, timer = null, silence = null, failures = 0, viewers = null, state = "", stopped = false;

    function setState(next) {
      if (state !== next) { state = next; el.setAttribute("data-state", next); }
    }
    function render(n) {
      viewers = n;
      const shown = format(n);
      const text = typeof label === "function" ? clean(label(n, shown), 200)
        : label.includes("{n}") ? label.split("{n}").join(shown) : label ? `${shown} ${label}` : shown;
      if (el.textContent !== text) el.textContent = text;
    }
    function drop(ws) { // forget a socket: its late events change nothing
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(1000); } catch (_) { /* already closing */ }
    }
    function awake(ws) { // a socket silent for longer than a few keep-alives is dead (sleep, a lost network)
      clearTimeout(silence);
      silence = setTimeout(guard(() => { if (socket === ws) { socket = null; drop(ws); retry(); } }), cfg.silenceMs);
    }
    function retry() {
      clearTimeout(silence);
      if (stopped) return;
      setState("retrying");
      const delay = Math.min(cfg.maxDelayMs, cfg.minDelayMs * 2 ** failures) * (0.75 + Math.random() * 0.5);
      failures += 1;
      timer = setTimeout(guard(connect), delay);
    }
    function connect() {
      timer = null;
      if (stopped) return;
      setState("connecting");
      let ws;
      try { ws = socket = new WebSocket(url, ["vidpulse", key]); } catch (error) { // blocked (mixed content): final
        setState("refused"); warn(error); return;
      }
      let refusal = "";
      awake(ws); // a handshake that hangs is replaced like a silent socket
      ws.onopen = guard(() => awake(ws));
      ws.onmessage = guard((event) => {
        awake(ws);
        let message = null;
        try { message = JSON.parse(event.data); } catch (_) { return; }
        if (message && message.error) { refusal = clean(message.error, 300); return; }
        const n = message && message.current ? message.current.viewers : undefined;
        if (typeof n === "number" && n >= 0 && isFinite(n)) { failures = 0; setState("live"); render(n); }
      });
      ws.onclose = guard((event) => {
        if (socket !== ws) return;
        socket = null;
        if (FINAL_CLOSES.includes(event.code)) {
          clearTimeout(silence);
          setState("refused");
          viewers = null;
          el.textContent = "";
          warn(`live viewers of ${account}/${video} refused (${event.code - 4000}): ${refusal || event.reason || "no reason"}; not retrying`);
          return;
        }
        retry();
      });
    }

    connect();
    return {
      get viewers() { return viewers; },
      get state() { return state; },
      stop: guard(() => {
        if (stopped) return;
        stopped = true;
        clearTimeout(timer); clearTimeout(silence);
        if (socket) { drop(socket); socket = null; }
        setState("stopped");
      }),
    };
  }

  /** Shows the live viewers of one video in `element` ("1,234 watching"); returns a handle with stop(), and
   *  read-only `viewers` and `state`. Never throws: invalid arguments log a warning and give an idle handle. */
  function liveViewers(element, options) {
    try { return watchViewers(element, options || {}); } catch (error) {
      warn(error);
      return { viewers: null, state: "invalid", stop() {} };
    }
  }

  /** <vidpulse-viewers account video key [endpoint] [label] [locale]>: a liveViewers badge while in the document. */
  function defineBadge() {
    if (typeof customElements === "undefined" || typeof HTMLElement === "undefined" || customElements.get(BADGE_TAG)) return;
    class VidpulseViewers extends HTMLElement {
      static get observedAttributes() { return BADGE_ATTRIBUTES; }
      connectedCallback() { this.refresh(); }
      disconnectedCallback() { this.refresh(); }
      attributeChangedCallback() { this.refresh(); }
      get viewers() { return this._vpHandle ? this._vpHandle.viewers : null; }
      refresh() { // one restart for a burst of changes (the parser sets every attribute, then connects)
        if (this._vpQueued) return;
        this._vpQueued = true;
        Promise.resolve().then(guard(() => {
          this._vpQueued = false;
          if (this._vpHandle) this._vpHandle.stop();
          this._vpHandle = null;
          if (!this.isConnected) return;
          const options = {};
          for (const name of BADGE_ATTRIBUTES) if (this.hasAttribute(name)) options[name] = this.getAttribute(name);
          this._vpHandle = liveViewers(this, options);
        }));
      }
    }
    customElements.define(BADGE_TAG, VidpulseViewers);
  }
  guard(defineBadge)();

  global.vidpulse = { attach, liveViewers, version };
})(typeof self !== "undefined" ? self : this);
