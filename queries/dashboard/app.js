/* vidpulse dashboard: plain JavaScript, no build step, no framework.
 *
 * Everything on screen is an answer of the public API (/v1/whoami, /v1/events, /v1/timeseries, retention,
 * export and the /v1/live push channel) asked with the key the user pasted, so the page shows exactly what
 * the API answers and can do nothing that key could not. The key lives in sessionStorage and travels only
 * in the Authorization header (and, for the WebSocket, which cannot carry headers, as a subprotocol value):
 * never in a URL, never in a log.
 *
 * The page state (view, range, time zone, filters, segment) lives in the location hash, so reload, back and
 * shared links keep it; every change writes the hash and one render() draws from it.
 */
'use strict';
(() => {
  const STORE_KEY = 'vidpulse.key';
  const STORE_WHO = 'vidpulse.who';
  const MINUTE = 60000, HOUR = 60 * MINUTE, DAY = 24 * HOUR;
  // Buckets chosen so each chart has 60-300 points: enough shape, cheap to draw and to ask for.
  const PRESETS = {
    '1h': {span: HOUR, bucket: '1m', name: 'hour'},
    '24h': {span: DAY, bucket: '10m', name: '24 h'},
    '7d': {span: 7 * DAY, bucket: '1h', name: '7 days'},
    '30d': {span: 30 * DAY, bucket: '4h', name: '30 days'},
  };
  const NICE_BUCKETS = ['1m', '2m', '5m', '10m', '15m', '30m', '1h', '2h', '3h', '4h', '6h', '12h', '1d', '2d', '7d'];
  const MAX_POINTS = 300;
  const UNIQUE_HELP = 'Distinct devices, not people: a device is a salted fingerprint of its address, browser and ' +
    'player, counted when one of its sessions watched in the range. Logged-in users are counted separately ' +
    '(unique_viewers). Exact up to 1,000, within 1 % above.';
  const TILES = [
    {metric: 'video_view', label: 'Views', kind: 'count', help: 'Stream starts (video_view); a replay counts again.'},
    {metric: 'watch_minutes', label: 'Watch minutes', kind: 'minutes'},
    {metric: 'fingerprint_count', label: 'Unique viewers', kind: 'count', help: UNIQUE_HELP},
    {metric: 'ccu', label: 'Peak concurrent viewers', kind: 'count', peak: true,
      help: 'The most sessions watching in any one minute of the range (the highest per-minute ccu).'},
    {metric: 'error_rate', label: 'Error rate', kind: 'ratio', lowerIsBetter: true, quality: true,
      help: 'Sessions with a fatal error / views.'},
    {metric: 'ttff_p50_ms', label: 'Time to first frame, p50', kind: 'ms', lowerIsBetter: true, quality: true},
    {metric: 'ttff_p95_ms', label: 'Time to first frame, p95', kind: 'ms', lowerIsBetter: true, quality: true},
    {metric: 'rebuffer_ratio', label: 'Rebuffer ratio', kind: 'ratio', lowerIsBetter: true, quality: true,
      help: 'Time stalled / (time watched + time stalled).'},
    {metric: 'exit_before_start_rate', label: 'Exits before start', kind: 'ratio', lowerIsBetter: true, quality: true,
      help: 'Views whose session ended before the first frame / views.'},
  ];
  const TOP_COLUMNS = [
    {metric: 'video_view', label: 'Views', kind: 'count'},
    {metric: 'watch_minutes', label: 'Watch minutes', kind: 'minutes'},
    {metric: 'fingerprint_count', label: 'Unique viewers', kind: 'count'},
    {metric: 'ccu', label: 'Sessions', kind: 'count'},
    {metric: 'error_rate', label: 'Error rate', kind: 'ratio'},
    {metric: 'ttff_p50_ms', label: 'TTFF p50', kind: 'ms'},
  ];
  const TOP_PAGE = 10;
  const BREAKDOWNS = [
    {dim: 'device_type', title: 'Device type', limit: 8},
    {dim: 'os', title: 'Operating system', limit: 8},
    {dim: 'browser', title: 'Browser', limit: 8},
    {dim: 'country', title: 'Country', limit: 10},
    {dim: 'domain', title: 'Domain', limit: 8},
  ];
  // What each live field is made of (queries/live.py FIELD_METRICS): a public key asks only for what it may read.
  const LIVE_FIELDS = {
    viewers: ['ccu'], viewers_change_pct: ['ccu'], trend: ['ccu'], peak_viewers: ['ccu'], peak_at: ['ccu'],
    plays_per_minute: ['video_view'], watch_seconds_per_minute: ['video_seconds_viewed'],
    error_rate: ['error_rate'], rebuffer_ratio: ['rebuffer_ratio'], exit_before_start_rate: ['exit_before_start_rate'],
    ttff_p50_ms: ['ttff_p50_ms'], ttff_p95_ms: ['ttff_p95_ms'],
    by_video: ['ccu', 'video_view'], by_country: ['ccu', 'video_view'], by_device_type: ['ccu', 'video_view'],
  };
  const LIVE_BACKOFF_S = [1, 2, 4, 8, 15, 30];
  const COLORS = {views: '#2563eb', ccu: '#7c3aed', live: '#0f766e', retention: '#c2410c', grid: '#e5e7eb', axis: '#374151'};
  const BROWSER_TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  // uPlot's time axis labels, 24-hour and day-month (its default is US-style am/pm): per tick step, the
  // label and what to add below it when the year, month, day (or hour) changes.
  const TIME_TICKS = [
    [3600 * 24 * 365, '{YYYY}', null, null, null, null, null, null, 1],
    [3600 * 24 * 28, '{MMM}', '\n{YYYY}', null, null, null, null, null, 1],
    [3600 * 24, '{D} {MMM}', '\n{YYYY}', null, null, null, null, null, 1],
    [3600, '{HH}:{mm}', '\n{D} {MMM} {YYYY}', null, '\n{D} {MMM}', null, null, null, 1],
    [60, '{HH}:{mm}', '\n{D} {MMM} {YYYY}', null, '\n{D} {MMM}', null, null, null, 1],
    [1, '{HH}:{mm}:{ss}', '\n{D} {MMM} {YYYY}', null, '\n{D} {MMM}', null, null, null, 1],
  ];
  // Deferred scripts: app.js runs first so its questions leave early; uPlot is there once the DOM is ready.
  const domReady = new Promise((resolve) => {
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', resolve, {once: true});
    else resolve();
  });

  const state = {
    key: null, who: null, route: 'overview', video: null,
    range: '24h', from: null, to: null, tz: BROWSER_TZ, filters: {}, viewer: 'all',
    top: {sort: null, offset: 0}, generation: 0, charts: {}, live: null, retry: null,
  };

  // ------------------------------------------------------------------ small helpers

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const floorMinute = (ms) => ms - (ms % MINUTE);
  // A timestamp after the next frame is painted (a frame callback, then a task after it): what "shown" means.
  const afterPaint = (then) => requestAnimationFrame(() => setTimeout(then, 0));

  /** h('a', {href: '#'}, 'text', child): elements without innerHTML, so no API value is ever parsed as markup. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else if (name === 'style') node.style.cssText = value;
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  const NUMBER = new Intl.NumberFormat('en-US', {maximumFractionDigits: 0});
  const ONE_DECIMAL = new Intl.NumberFormat('en-US', {minimumFractionDigits: 1, maximumFractionDigits: 1});
  const TWO_DECIMALS = new Intl.NumberFormat('en-US', {minimumFractionDigits: 2, maximumFractionDigits: 2});

  /** One rule per kind of number, kept simple so a test can write the same rule. */
  function format(value, kind) {
    if (value === null || value === undefined) return '—';
    switch (kind) {
      case 'minutes': return value >= 100 ? NUMBER.format(value) : ONE_DECIMAL.format(value);
      case 'ratio': return `${TWO_DECIMALS.format(value * 100)} %`;
      case 'ms': return `${NUMBER.format(value)} ms`;
      default: return NUMBER.format(value);
    }
  }

  function compactAxis(value) {
    if (Math.abs(value) >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
    if (Math.abs(value) >= 1e4) return `${+(value / 1e3).toFixed(1)}k`;
    return NUMBER.format(value);
  }

  const dateFormats = new Map();
  function dateFormat(tz, options) {
    const id = tz + JSON.stringify(options);
    if (!dateFormats.has(id)) dateFormats.set(id, new Intl.DateTimeFormat('en-GB', {timeZone: tz, ...options}));
    return dateFormats.get(id);
  }
  const showTime = (ms, tz = state.tz) => dateFormat(tz, {weekday: 'short', day: 'numeric', month: 'short',
    hour: '2-digit', minute: '2-digit'}).format(new Date(ms));
  const clock = (ms, tz = state.tz) => dateFormat(tz, {hour: '2-digit', minute: '2-digit', second: '2-digit'})
    .format(new Date(ms));

  /** The zone's offset from UTC at an instant (ms), from Intl: no time zone library needed. */
  function zoneOffset(epochMs, tz) {
    const parts = {};
    for (const part of dateFormat(tz, {hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric',
      hour: 'numeric', minute: 'numeric', second: 'numeric'}).formatToParts(new Date(epochMs))) {
      parts[part.type] = Number(part.value);
    }
    const asUtc = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour, parts.minute, parts.second);
    return asUtc - Math.floor(epochMs / 1000) * 1000;
  }

  /** "2026-12-01T10:00" read as wall-clock time in tz → epoch ms (twice, for instants near a DST change). */
  function zonedToEpoch(local, tz) {
    const match = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(local || '');
    if (!match) return null;
    const guess = Date.UTC(+match[1], +match[2] - 1, +match[3], +match[4], +match[5]);
    const first = guess - zoneOffset(guess, tz);
    return guess - zoneOffset(first, tz);
  }

  function epochToZoned(epochMs, tz) {
    return new Date(epochMs + zoneOffset(epochMs, tz)).toISOString().slice(0, 16);
  }

  function validZone(tz) {
    if (!tz) return null;
    try {
      new Intl.DateTimeFormat('en', {timeZone: tz});
      return tz;
    } catch {
      return null;
    }
  }

  const regionNames = typeof Intl.DisplayNames === 'function' ? new Intl.DisplayNames(['en'], {type: 'region'}) : null;
  function label(dimension, value) {
    if (value === '' || value === null || value === undefined) return '(none)';
    if (dimension === 'country' && regionNames && /^[A-Z]{2}$/.test(value) && value !== 'ZZ') {
      try {
        return `${regionNames.of(value)} (${value})`;
      } catch {
        return value;
      }
    }
    if (dimension === 'country' && value === 'ZZ') return 'Unknown (ZZ)';
    return value;
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }
  class Stale extends Error {}

  const isPublic = () => state.who && state.who.kind === 'public';
  const allowed = (metric) => !isPublic() || (state.who.metrics || []).includes(metric);
  const account = () => encodeURIComponent(state.who.account);

  /**
   * GET with the key in the Authorization header. 429 waits its Retry-After, 503 and a dead connection retry
   * with back-off (both say so in the notice bar); other refusals throw ApiError for the panel to explain.
   * A request of a render the user has since left (another generation) gives up instead of retrying.
   */
  async function api(path, params, generation, {raw = false} = {}) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(params || {})) {
      if (value !== undefined && value !== null && value !== '') query.set(name, value);
    }
    const url = query.size ? `${path}?${query}` : path;
    for (let attempt = 0; ; attempt++) {
      if (generation !== undefined && generation !== state.generation) throw new Stale();
      let response = null;
      try {
        response = await fetch(url, {headers: {Authorization: `Bearer ${state.key}`}, cache: 'no-store',
          credentials: 'omit'});
      } catch {
        response = null;  // the API is down or unreachable: retried below
      }
      if (response && response.ok) {
        settled();
        return raw ? response : response.json();
      }
      const status = response ? response.status : 0;
      if (status === 429 || status === 0 || status >= 502) {
        const wait = retryDelay(response, attempt);
        await waitNotice(status, wait);
        continue;
      }
      const body = await response.json().catch(() => ({}));
      throw new ApiError(status, body.error || `HTTP ${status}`);
    }
  }

  function retryDelay(response, attempt) {
    const header = response && Number(response.headers.get('Retry-After'));
    if (header > 0) return Math.min(header, 120) * 1000;
    return Math.min(1000 * 2 ** attempt, 30000);
  }

  /** The notice bar: what is going on and when the next try is, counted down. */
  async function waitNotice(status, ms) {
    const until = Date.now() + ms;
    const bar = $('#notice');
    const text = status === 429
      ? () => `Too many requests (429): slowing down as the API asks; retrying in ${Math.ceil((until - Date.now()) / 1000)} s.`
      : () => `The API is not answering${status ? ` (${status})` : ''}; retrying in ${Math.ceil((until - Date.now()) / 1000)} s. ` +
        'Is vidpulse running?';
    bar.dataset.state = status === 429 ? 'slow-down' : 'retrying';
    bar.hidden = false;
    bar.textContent = text();
    clearInterval(state.retry);
    state.retry = setInterval(() => { bar.textContent = text(); }, 1000);
    await sleep(ms);
    clearInterval(state.retry);
  }

  function settled() {
    const bar = $('#notice');
    if (!bar.hidden && bar.dataset.state !== 'info') {
      bar.hidden = true;
      bar.dataset.state = '';
    }
  }

  function explain(error) {
    if (error.status === 403) return `Outside this key's scope (403): ${error.message}`;
    if (error.status === 400) return `The API refused the question (400): ${error.message}`;
    if (error.status === 422) return `Too costly for this deployment (422): ${error.message}`;
    return `The API answered ${error.status}: ${error.message}`;
  }

  /** Runs one panel's work: busy while it runs, its own error message when it fails (401 signs out). */
  async function panel(element, work) {
    element.setAttribute('aria-busy', 'true');
    try {
      await work();
    } catch (error) {
      if (error instanceof Stale) return;
      if (error instanceof ApiError && error.status === 401) {
        signOut('This key was refused (401): it is wrong, revoked, or its account was deleted. Paste a valid key.');
        return;
      }
      if (!(error instanceof ApiError)) console.warn('[vidpulse dashboard]', error);
      element.replaceChildren(h('p', {class: 'error-box', role: 'alert', 'data-status': error.status || 0},
        error instanceof ApiError ? explain(error) : `Could not show this: ${error.message}`));
    } finally {
      element.removeAttribute('aria-busy');
    }
  }

  // ------------------------------------------------------------------ page state in the hash

  function readHash() {
    const raw = location.hash.replace(/^#/, '') || '/';
    const cut = raw.indexOf('?');
    const path = cut < 0 ? raw : raw.slice(0, cut);
    const query = new URLSearchParams(cut < 0 ? '' : raw.slice(cut + 1));
    state.route = 'overview';
    state.video = null;
    if (path === '/live') state.route = 'live';
    else if (path.startsWith('/video/') && path.length > 7) {
      state.route = 'video';
      state.video = decodeURIComponent(path.slice(7));
    }
    const range = query.get('range');
    state.range = range in PRESETS || range === 'custom' ? range : '24h';
    state.from = Number(query.get('from')) || null;
    state.to = Number(query.get('to')) || null;
    if (state.range === 'custom' && !(state.from && state.to && state.from < state.to)) state.range = '24h';
    state.tz = validZone(query.get('tz')) || BROWSER_TZ;
    state.filters = {};
    for (const clause of (query.get('where') || '').split(';')) {
      const [dimension, value] = clause.split('==');
      if (dimension && value && dimension !== 'video') state.filters[dimension] = value;
    }
    state.viewer = ['anonymous', 'registered'].includes(query.get('viewer')) ? query.get('viewer') : 'all';
  }

  /** The hash for the current state with some changes: the one way the page moves. */
  function hashFor(changes = {}) {
    const next = {...state, ...changes};
    const path = next.route === 'live' ? '/live' : next.route === 'video' ? `/video/${encodeURIComponent(next.video)}` : '/';
    const query = new URLSearchParams();
    if (next.range !== '24h') query.set('range', next.range);
    if (next.range === 'custom') {
      query.set('from', next.from);
      query.set('to', next.to);
    }
    if (next.tz !== BROWSER_TZ) query.set('tz', next.tz);
    const where = Object.entries(next.filters).map(([d, v]) => `${d}==${v}`).join(';');
    if (where) query.set('where', where);
    if (next.route === 'video' && next.viewer !== 'all') query.set('viewer', next.viewer);
    return `#${path}${query.size ? `?${query}` : ''}`;
  }

  function go(changes) {
    const target = hashFor(changes);
    if (target === location.hash) render();
    else location.hash = target;
  }

  // ------------------------------------------------------------------ what to ask

  /** The range as whole minutes [start, end) and its API parameters; the previous period has the same length. */
  function currentRange() {
    let start, end;
    if (state.range === 'custom') {
      start = floorMinute(state.from);
      end = floorMinute(state.to) + MINUTE;
    } else {
      end = floorMinute(Date.now()) + MINUTE;  // the minute now in progress is included, as the API's `to` does
      start = end - PRESETS[state.range].span;
    }
    const span = end - start;
    const bucket = state.range === 'custom' ? niceBucket(span) : PRESETS[state.range].bucket;
    return {start, end, span, bucket, params: {from: start, to: end - 1}, previous: {from: start - span, to: start - 1}};
  }

  function bucketMs(bucket) {
    const unit = {m: MINUTE, h: HOUR, d: DAY}[bucket.slice(-1)];
    return Number(bucket.slice(0, -1)) * unit;
  }

  function niceBucket(span) {
    return NICE_BUCKETS.find((bucket) => span / bucketMs(bucket) <= MAX_POINTS) || NICE_BUCKETS[NICE_BUCKETS.length - 1];
  }

  function bucketWords(bucket) {
    const n = Number(bucket.slice(0, -1));
    const unit = {m: 'minute', h: 'hour', d: 'day'}[bucket.slice(-1)];
    return n === 1 ? `per ${unit}` : `per ${n} ${unit}s`;
  }

  /** where= for this page: its filters, the video of a video page, and a public key's videos (it must name them). */
  function whereFor({withViewer = true, filters = state.filters} = {}) {
    const clauses = {...filters};
    if (state.route === 'video') clauses.video = state.video;
    if (state.route === 'video' && withViewer && state.viewer !== 'all') clauses.viewer = state.viewer;
    if (isPublic() && !clauses.video) clauses.video = state.who.videos.join(',');
    return Object.entries(clauses).map(([d, v]) => `${d}==${v}`).join(';') || undefined;
  }

  const EVENTS = () => `/v1/events/accounts/${account()}`;
  const TIMESERIES = () => `/v1/timeseries/accounts/${account()}`;

  // ------------------------------------------------------------------ sign-in

  function showView(name) {
    for (const view of ['signin', 'report', 'live']) $(`#view-${view}`).hidden = view !== name;
  }

  function showSignin(message) {
    stopLive();
    state.generation++;
    $('#nav').hidden = true;
    $('#who').hidden = true;
    settled();
    showView('signin');
    const error = $('#signin-error');
    error.hidden = !message;
    error.textContent = message || '';
    $('#view-signin').dataset.state = message ? 'refused' : 'signed-out';
    $('#key-input').focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(STORE_KEY);
    sessionStorage.removeItem(STORE_WHO);
    state.key = null;
    state.who = null;
    showSignin(message);
  }

  async function signIn(event) {
    event.preventDefault();
    const key = $('#key-input').value.trim();
    if (!key) return;
    state.key = key;
    const button = $('#signin button');
    button.disabled = true;
    try {
      const who = await api('/v1/whoami');
      sessionStorage.setItem(STORE_KEY, key);
      sessionStorage.setItem(STORE_WHO, JSON.stringify(who));
      state.who = who;
      $('#key-input').value = '';
      render();
    } catch (error) {
      state.key = null;
      const message = error.status === 401
        ? 'This key was refused (401): it is wrong, revoked, or its account was deleted. Check that it was pasted whole.'
        : error.status === 403 ? explain(error) : `Could not sign in: ${error.message}`;
      showSignin(message);
    } finally {
      button.disabled = false;
    }
  }

  /** A stored key is shown at once from the stored whoami answer (a faster first paint), and checked again. */
  async function verify() {
    try {
      const who = await api('/v1/whoami');
      const changed = JSON.stringify(who) !== JSON.stringify(state.who);
      state.who = who;
      sessionStorage.setItem(STORE_WHO, JSON.stringify(who));
      if (changed) render();
    } catch (error) {
      if (error.status === 401) {
        signOut('This key is no longer accepted (401): it was revoked or its account deleted. Paste a valid key.');
      } else if (!state.who) {
        showSignin(error instanceof ApiError ? explain(error) : `Could not check the key: ${error.message}`);
      }
    }
  }

  // ------------------------------------------------------------------ render

  function render() {
    if (!state.key || !state.who) return showSignin();
    $('#nav').hidden = false;
    $('#who').hidden = false;
    $('#account-label').textContent = `Account ${state.who.account} · ${isPublic() ? 'public' : 'secret'} key`;
    $('#nav-overview').setAttribute('aria-current', state.route === 'overview' ? 'page' : 'false');
    $('#nav-live').setAttribute('aria-current', state.route === 'live' ? 'page' : 'false');
    $('#nav-overview').href = hashFor({route: 'overview'});
    $('#nav-live').href = hashFor({route: 'live'});
    const videoNav = $('#nav-video');
    videoNav.hidden = state.route !== 'video';
    videoNav.textContent = state.route === 'video' ? `Video ${state.video}` : '';
    if (state.route === 'live') {
      showView('live');
      startLive();
    } else {
      stopLive();
      showView('report');
      renderReport();
    }
  }

  function renderReport() {
    const generation = ++state.generation;
    const range = currentRange();
    const video = state.route === 'video';
    document.title = video ? `vidpulse · video ${state.video}` : 'vidpulse · overview';
    $('#report-title').textContent = video ? `Video ${state.video}` : 'Overview';
    for (const part of $$('.only-video')) part.hidden = !video;
    for (const part of $$('.only-overview')) part.hidden = video;
    renderToolbar(range);
    renderChips($('#chips'));
    $('#empty').hidden = true;
    $('#report-note').hidden = true;
    const where = whereFor();
    const tiles = renderTileFrames($('#tiles'), range);
    if (video) renderExport(range);
    // The tiles' two questions go first and alone: the API answers them fastest when nothing else competes
    // for its database, and they are what the page is for. The rest starts as soon as they are on screen.
    let release;
    const tilesShown = new Promise((resolve) => { release = resolve; });
    const tasks = [panel($('#tiles'), () => loadTiles(generation, range, where, tiles, release)).finally(release)];
    tilesShown.then(() => {
      if (generation !== state.generation) return;
      tasks.push(panel($('#chart-views'), () => loadCharts(generation, range, where)),
        ...BREAKDOWNS.map((breakdown) => loadBreakdown(generation, range, where, breakdown)));
      if (video) tasks.push(loadRetention(generation, range), loadSegments(generation, range));
      else tasks.push(panel($('#top-videos'), () => loadTop(generation, range, where)));
      return Promise.all(tasks);
    }).then(() => {
      if (generation === state.generation) afterPaint(() => performance.mark('vp:complete'));
    });
  }

  function renderToolbar(range) {
    for (const button of $$('#ranges button')) {
      button.setAttribute('aria-pressed', String(button.dataset.range === state.range));
    }
    const custom = $('#custom');
    custom.hidden = state.range !== 'custom' && custom.dataset.open !== 'true';
    $('#custom-from').value = epochToZoned(range.start, state.tz);
    $('#custom-to').value = epochToZoned(range.end - MINUTE, state.tz);
    $('#tz').value = state.tz;
    const text = $('#range-label');
    text.textContent = `${showTime(range.start)} – ${showTime(range.end)} · ${state.tz}`;
    text.dataset.from = range.params.from;
    text.dataset.to = range.params.to;
    text.dataset.bucket = range.bucket;
  }

  function renderChips(container) {
    const entries = Object.entries(state.filters);
    container.replaceChildren(...entries.map(([dimension, value]) => h('button', {
      type: 'button', class: 'chip', 'data-dimension': dimension, 'data-value': value,
      'aria-label': `Remove the filter ${dimension} ${label(dimension, value)}`,
      onclick: () => {
        const filters = {...state.filters};
        delete filters[dimension];
        state.top.offset = 0;
        go({filters});
      },
    }, h('span', {class: 'chip-dim'}, dimension.replace('_', ' ')), ` ${label(dimension, value)} `,
    h('span', {'aria-hidden': 'true'}, '×'))));
    if (entries.length > 1) {
      container.append(h('button', {type: 'button', class: 'quiet', onclick: () => go({filters: {}})}, 'Clear all'));
    }
    container.hidden = !entries.length;
  }

  function toggleFilter(dimension, value) {
    const filters = {...state.filters};
    if (filters[dimension] === value) delete filters[dimension];
    else filters[dimension] = value;
    state.top.offset = 0;
    go({filters});
  }

  // ------------------------------------------------------------------ tiles

  function renderTileFrames(container, range) {
    const shown = TILES.filter((tile) => allowed(tile.metric));
    const previous = state.range === 'custom' ? 'the period before' : `previous ${PRESETS[state.range].name}`;
    const frames = new Map();
    const frame = (tile) => {
      const value = h('div', {class: 'tile-value'}, h('span', {class: 'loading'}, 'loading…'));
      const change = h('div', {class: 'tile-change muted'}, '');
      const help = tile.help ? [
        h('button', {type: 'button', class: 'info', 'aria-label': `About ${tile.label}`,
          'aria-describedby': `tip-${tile.metric}`}, '?'),
        h('span', {role: 'tooltip', id: `tip-${tile.metric}`, class: 'tooltip'}, tile.help)] : [];
      frames.set(tile.metric, {tile, value, change, previous});
      return h('div', {class: 'tile', 'data-metric': tile.metric},
        h('div', {class: 'tile-label'}, tile.label, ...help), value, change);
    };
    // Two rows: how many watched, then how well it played.
    const audience = shown.filter((tile) => !tile.quality);
    const quality = shown.filter((tile) => tile.quality);
    container.replaceChildren(
      ...[['Audience', audience], ['Playback quality', quality]].filter(([, tiles]) => tiles.length).map(([name, tiles]) =>
        h('div', {class: 'tile-row', role: 'group', 'aria-label': name}, ...tiles.map(frame))));
    container.dataset.span = range.span;
    return frames;
  }

  /** The totals of a range (one /v1/events row for the whole account) and its peak ccu (bucket_limit=1). */
  async function rangeFigures(generation, params, where, metrics, withPeak) {
    const [totals, peak] = await Promise.all([
      metrics.length ? api(EVENTS(), {dimensions: 'account', metrics: metrics.join(','), where, ...params}, generation)
        : null,
      withPeak ? api(TIMESERIES(), {dimensions: 'account', metrics: 'ccu', where, bucket_limit: 1, ...params},
        generation) : null,
    ]);
    const figures = {};
    const row = totals && totals.data[0];
    for (const metric of metrics) figures[metric] = row ? row.totals[metric] : emptyValue(metric);
    if (withPeak) figures.ccu = peak.ccu.data.length ? peak.ccu.data[0].points[0].value : 0;
    // The account-wide row is there even for an empty range (with zeros): nothing happened when all is 0 or null.
    figures.empty = [...metrics, ...(withPeak ? ['ccu'] : [])].every((metric) => !figures[metric]);
    return figures;
  }

  // With no row at all the API has nothing to say: counts are 0, ratios and percentiles are null (as its own rule).
  const emptyValue = (metric) => (TILES.find((tile) => tile.metric === metric) || {}).kind === 'count'
    || metric === 'watch_minutes' ? 0 : null;

  async function loadTiles(generation, range, where, frames, shown) {
    const metrics = [...frames.keys()].filter((metric) => !frames.get(metric).tile.peak);
    const withPeak = frames.has('ccu');
    const current = await rangeFigures(generation, range.params, where, metrics, withPeak);
    if (generation !== state.generation) return;
    for (const [metric, frame] of frames) {
      frame.value.dataset.value = JSON.stringify(current[metric]);
      frame.value.replaceChildren(format(current[metric], frame.tile.kind));
    }
    afterPaint(() => performance.mark('vp:tiles'));
    shown();
    if (current.empty) checkEmpty(generation);
    const previous = await rangeFigures(generation, range.previous, where, metrics, withPeak);
    if (generation !== state.generation) return;
    for (const [metric, frame] of frames) renderChange(frame, current[metric], previous[metric]);
  }

  /** Counts compare in percent; ratios in percentage points (a relative change of a small rate misleads). */
  function renderChange(frame, now, before) {
    const {tile, change} = frame;
    change.dataset.previous = JSON.stringify(before);
    let text, delta = null;
    if (now === null || before === null || now === undefined || before === undefined) {
      text = `no comparison with ${frame.previous}`;
    } else if (tile.kind === 'ratio') {
      delta = (now - before) * 100;
      text = `${delta > 0 ? '+' : delta < 0 ? '−' : '±'}${TWO_DECIMALS.format(Math.abs(delta))} pp vs ${frame.previous}`;
    } else if (before === 0) {
      text = now === 0 ? `none in ${frame.previous} either` : `new: none in ${frame.previous}`;
    } else {
      delta = ((now - before) / before) * 100;
      text = `${delta > 0 ? '+' : delta < 0 ? '−' : '±'}${ONE_DECIMAL.format(Math.abs(delta))} % vs ${frame.previous}`;
    }
    change.dataset.change = delta === null ? '' : String(delta);
    change.className = 'tile-change';
    if (delta) {
      const better = tile.lowerIsBetter ? delta < 0 : delta > 0;
      change.classList.add(better ? 'good' : 'bad');
      text = `${delta > 0 ? '▲' : '▼'} ${text}`;
    } else change.classList.add('muted');
    change.textContent = text;
  }

  /** Where beacons go: this origin when it takes them too (the one-process `vidpulse up`, which serves the SDK
   *  here), else the split `vidpulse up`'s tracker on the port after this page's; behind a default port (a
   *  deployment) nothing is guessed. */
  async function trackerOrigin() {
    const here = await fetch('/sdk/vidpulse.js', {method: 'HEAD'}).then((response) => response.ok, () => false);
    if (here) return location.origin;
    return location.port ? `${location.protocol}//${location.hostname}:${Number(location.port) + 1}` : '<tracker>';
  }

  /** Nothing in the range: is there nothing at all yet (say how to send a first beacon) or only not here? */
  async function checkEmpty(generation) {
    const metric = allowed('video_impression') ? 'video_impression' : state.who.metrics[0];
    const scope = isPublic() ? `video==${state.who.videos.join(',')}` : undefined;
    const ever = await api(EVENTS(), {dimensions: 'account', metrics: metric, where: scope}, generation)
      .catch(() => null);
    if (generation !== state.generation || !ever) return;
    if (ever.data.length && ever.data[0].totals[metric]) {
      const note = $('#report-note');
      note.hidden = false;
      note.textContent = Object.keys(state.filters).length
        ? 'Nothing in this range with these filters: remove a filter or pick a longer range.'
        : 'Nothing in this range: pick a longer range.';
      return;
    }
    const empty = $('#empty');
    const origin = await trackerOrigin();
    if (generation !== state.generation) return;
    const curl = `curl -XPOST ${origin}/v1/track -H 'Content-Type: text/plain' \\\n` +
      `  -A 'Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0' -d '{"account": "${state.who.account}", ` +
      `"player": "web",\n  "session": "first-session-0001", "video": "5555",\n` +
      `  "events": [{"id": "1", "type": "view", "ts": '$(date +%s%3N)'}]}'`;
    empty.replaceChildren(
      h('h2', null, 'No data yet'),
      h('p', null, `Account ${state.who.account} has received no beacons in the last 32 days. Send a first one ` +
        '(a browser-like User-Agent: curl\'s own is counted as a bot), then reload in a few seconds:'),
      h('pre', {tabindex: '0'}, h('code', null, curl)),
      h('p', null, 'For real players, load the SDK from ', h('code', null, `${origin}/sdk/vidpulse.js`),
        '; for realistic test traffic run ', h('code', null, `vidpulse simulate --account ${state.who.account}`),
        ' (with VIDPULSE_TRUSTED_PROXIES=127.0.0.1 for countries).'));
    empty.hidden = false;
  }

  // ------------------------------------------------------------------ charts

  /** A uPlot chart in a .chart box, redrawn at the box's width; a description for screen readers. */
  function chart(box, {xs, series, time = true, yKind = 'count', xFormat, xLegend, description}) {
    const old = state.charts[box.id];
    if (old) {
      old.observer.disconnect();
      old.plot.destroy();
    }
    box.replaceChildren();
    box.setAttribute('role', 'img');
    box.setAttribute('aria-label', description);
    box.dataset.points = String(xs.length);
    box.dataset.values = JSON.stringify(series[0].values);  // what is drawn, for whoever checks it against the API
    const width = Math.max(240, box.clientWidth || box.parentElement.clientWidth - 32);
    const countTicks = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6];
    const options = {
      width, height: box.classList.contains('short') ? 160 : 220,
      padding: [12, 22, 0, 4],  // room for the last x label
      tzDate: time ? (seconds) => window.uPlot.tzDate(new Date(seconds * 1e3), state.tz) : undefined,
      scales: {x: {time}, y: {range: (u, min, max) => [0, max > 0 ? max * 1.12 : 1]}},
      legend: {show: true, live: true},
      cursor: {points: {size: 7}},
      series: [
        {label: time ? 'Time' : 'Point', value: time ? '{D} {MMM} {HH}:{mm}' : (u, v) => (v === null ? '–' : (xLegend || xFormat)(v))},
        ...series.map((s) => ({
          label: s.label, stroke: s.color, width: 2, fill: s.fill || `${s.color}1f`,
          paths: s.bars ? window.uPlot.paths.bars({size: [0.72, 40]}) : undefined,
          points: {show: xs.length < 40},
          value: (u, v) => (v === null ? '–' : yKind === 'percent' ? `${v} %` : NUMBER.format(v)),
        })),
      ],
      axes: [
        {stroke: COLORS.axis, grid: {stroke: COLORS.grid, width: 1}, ticks: {stroke: COLORS.grid},
          values: time ? TIME_TICKS : (u, values) => values.map(xFormat || String)},
        {stroke: COLORS.axis, grid: {stroke: COLORS.grid, width: 1}, ticks: {stroke: COLORS.grid}, size: 52,
          incrs: yKind === 'count' ? countTicks : undefined,
          values: (u, values) => values.map((v) => (yKind === 'percent' ? `${v} %` : compactAxis(v)))},
      ],
    };
    const plot = new window.uPlot(options, [xs, ...series.map((s) => s.values)], box);
    // Charts follow their box (phone rotation, window resize) without a reload.
    const observer = new ResizeObserver(() => {
      const next = Math.max(240, box.clientWidth);
      if (Math.abs(next - plot.width) > 2) plot.setSize({width: next, height: plot.height});
    });
    observer.observe(box);
    state.charts[box.id] = {plot, observer};
    return plot;
  }

  function seriesOf(answer, metric, timestamps) {
    const data = answer[metric] ? answer[metric].data : [];
    if (!data.length) return timestamps.map(() => 0);
    return data[0].points.map((point) => point.value);
  }

  async function loadCharts(generation, range, where) {
    const metrics = ['video_view', 'ccu'].filter(allowed);
    $('#card-views').hidden = !allowed('video_view');
    $('#card-ccu').hidden = !allowed('ccu');
    if (!metrics.length) return;
    const ccuBox = $('#chart-ccu');
    ccuBox.setAttribute('aria-busy', 'true');  // one question feeds both charts
    try {
      await drawCharts(generation, range, where, metrics);
    } finally {
      ccuBox.removeAttribute('aria-busy');
    }
  }

  async function drawCharts(generation, range, where, metrics) {
    const answer = await api(TIMESERIES(), {dimensions: 'account', metrics: metrics.join(','), where,
      bucket_duration: range.bucket, ...range.params}, generation);
    await domReady;
    if (generation !== state.generation) return;
    const timestamps = [];
    for (let at = range.start; at < range.end; at += bucketMs(range.bucket)) timestamps.push(at);
    const first = answer[metrics[0]].data[0];
    const xs = (first ? first.points.map((p) => p.timestamp) : timestamps).map((ms) => ms / 1000);
    const per = bucketWords(range.bucket);
    if (allowed('video_view')) {
      const views = seriesOf(answer, 'video_view', timestamps);
      $('#views-caption').textContent = per;
      chart($('#chart-views'), {xs, series: [{label: 'Views', color: COLORS.views, values: views, bars: true}],
        description: `Views ${per}: ${NUMBER.format(views.reduce((a, b) => a + b, 0))} in all, ` +
          `at most ${NUMBER.format(Math.max(0, ...views))} in one bucket.`});
    }
    if (allowed('ccu')) {
      const ccu = seriesOf(answer, 'ccu', timestamps);
      $('#ccu-caption').textContent = `highest minute ${per}`;
      chart($('#chart-ccu'), {xs, series: [{label: 'Concurrent viewers', color: COLORS.ccu, values: ccu}],
        description: `Concurrent viewers, the highest minute ${per}; peak ${NUMBER.format(Math.max(0, ...ccu))}.`});
    }
  }

  // ------------------------------------------------------------------ top videos

  function topColumns() {
    return TOP_COLUMNS.filter((column) => allowed(column.metric));
  }

  async function loadTop(generation, range, where) {
    const columns = topColumns();
    const table = $('#top-videos');
    if (!columns.length) {
      table.replaceChildren(h('caption', null, 'This key may read no metric of the table.'));
      return;
    }
    const metrics = columns.map((column) => column.metric);
    if (!state.top.sort || !metrics.includes(state.top.sort.replace(/^-/, ''))) state.top.sort = `-${metrics[0]}`;
    // One more row than shown tells whether there is a next page.
    const answer = await api(EVENTS(), {dimensions: 'video', metrics: metrics.join(','), where, sort: state.top.sort,
      limit: TOP_PAGE + 1, offset: state.top.offset, ...range.params}, generation);
    if (generation !== state.generation) return;
    const rows = answer.data.slice(0, TOP_PAGE);
    const sortedBy = state.top.sort.replace(/^-/, '');
    const descending = state.top.sort.startsWith('-');
    const head = h('tr', null, h('th', {scope: 'col', class: 'rank'}, '#'), h('th', {scope: 'col'}, 'Video'),
      ...columns.map((column) => h('th', {
        scope: 'col', class: 'num',
        'aria-sort': column.metric === sortedBy ? (descending ? 'descending' : 'ascending') : 'none'},
      h('button', {type: 'button', class: 'sort', 'data-sort': column.metric, onclick: () => {
        const again = column.metric === sortedBy;
        state.top.sort = again && descending ? column.metric : `-${column.metric}`;
        state.top.offset = 0;
        panel(table, () => loadTop(state.generation, currentRange(), whereFor()));
      }}, column.label, h('span', {'aria-hidden': 'true', class: 'arrow'},
        column.metric === sortedBy ? (descending ? ' ↓' : ' ↑') : '')))));
    const body = rows.map((row, index) => {
      const id = row.dimensions.video;
      return h('tr', {'data-video': id},
        h('td', {class: 'rank muted'}, String(state.top.offset + index + 1)),
        h('td', null, h('a', {href: hashFor({route: 'video', video: id})}, id || '(none)')),
        ...columns.map((column) => h('td', {class: 'num', 'data-metric': column.metric,
          'data-value': JSON.stringify(row.totals[column.metric])}, format(row.totals[column.metric], column.kind))));
    });
    if (!rows.length) {
      body.push(h('tr', null, h('td', {colspan: columns.length + 2, class: 'muted'},
        state.top.offset ? 'No more videos.' : 'No video was watched in this range.')));
    }
    table.replaceChildren(h('caption', {class: 'sr-only'}, 'Top videos in the range'), h('thead', null, head),
      h('tbody', null, ...body));
    const page = state.top.offset / TOP_PAGE + 1;
    $('#top-page').textContent = `page ${page}`;
    $('#top-prev').disabled = state.top.offset === 0;
    $('#top-next').disabled = answer.data.length <= TOP_PAGE;
  }

  function pageTop(step) {
    state.top.offset = Math.max(0, state.top.offset + step * TOP_PAGE);
    panel($('#top-videos'), () => loadTop(state.generation, currentRange(), whereFor()));
  }

  // ------------------------------------------------------------------ breakdowns

  function breakdownMetric() {
    return allowed('video_view') ? 'video_view' : allowed('ccu') ? 'ccu' : state.who.metrics[0];
  }

  async function loadBreakdown(generation, range, where, breakdown) {
    const container = $('#breakdowns');
    let card = $(`#bd-${breakdown.dim}`);
    if (!card) {
      card = h('section', {class: 'card', id: `bd-${breakdown.dim}`, 'aria-labelledby': `bd-${breakdown.dim}-title`},
        h('h3', {id: `bd-${breakdown.dim}-title`}, breakdown.title), h('div', {class: 'bars'}));
      container.append(card);
    }
    const list = $('.bars', card);
    const metric = breakdownMetric();
    return panel(list, async () => {
      const answer = await api(EVENTS(), {dimensions: breakdown.dim, metrics: metric, where, sort: `-${metric}`,
        limit: breakdown.limit, ...range.params}, generation);
      if (generation !== state.generation) return;
      const rows = answer.data.map((row) => ({value: row.dimensions[breakdown.dim], count: row.totals[metric]}));
      list.replaceChildren(barList(breakdown.dim, rows, metric === 'video_view' ? 'views' : metric));
    });
  }

  /** A ranked bar list whose groups filter the page when clicked (values where= cannot hold are not buttons). */
  function barList(dimension, rows, unit, {extra} = {}) {
    if (!rows.length) return h('p', {class: 'muted'}, 'Nothing in this range.');
    const max = Math.max(1, ...rows.map((row) => row.count));
    return h('ol', {class: 'barlist'}, ...rows.map((row) => {
      const active = state.filters[dimension] === row.value;
      const filterable = row.value !== '' && !/[,;]/.test(row.value);
      const content = [
        h('span', {class: 'bar', style: `width:${(100 * row.count) / max}%`, 'aria-hidden': 'true'}),
        h('span', {class: 'bar-label', title: label(dimension, row.value)}, label(dimension, row.value)),
        h('span', {class: 'bar-value', 'data-value': JSON.stringify(row.count)},
          `${NUMBER.format(row.count)}${extra ? extra(row) : ''}`),
      ];
      return h('li', null, filterable ? h('button', {
        type: 'button', class: 'bar-row', 'data-dimension': dimension, 'data-value': row.value,
        'aria-pressed': String(active), 'aria-label': `${label(dimension, row.value)}: ${NUMBER.format(row.count)} ${unit}` +
          (active ? ', filtering the page: click to remove' : ': filter the page by it'),
        onclick: () => toggleFilter(dimension, row.value)}, ...content) : h('div', {class: 'bar-row static'}, ...content));
    }));
  }

  // ------------------------------------------------------------------ the video page

  function renderExport(range) {
    const box = $('.export');
    box.hidden = isPublic();  // the export endpoint takes secret keys only
    $('#export-status').textContent = '';
    for (const format of ['xlsx', 'csv']) {
      $(`#export-${format}`).onclick = () => download(format, range);
    }
  }

  /** Fetched with the key in a header, then saved from a Blob: the key never goes into a URL. */
  async function download(format, range) {
    const status = $('#export-status');
    status.textContent = `Preparing the ${format.toUpperCase()}…`;
    try {
      const response = await api(`/v1/events/accounts/${account()}/videos/${encodeURIComponent(state.video)}/export`,
        {format, ...range.params}, undefined, {raw: true});
      const blob = await response.blob();
      const disposition = response.headers.get('Content-Disposition') || '';
      const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || `vidpulse-${state.video}.${format}`;
      const url = URL.createObjectURL(blob);
      const link = h('a', {href: url, download: name, hidden: true});
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30000);
      status.textContent = `Downloaded ${name}.`;
    } catch (error) {
      if (error.status === 401) signOut('This key was refused (401). Paste a valid key.');
      else status.textContent = error instanceof ApiError ? explain(error) : `The download failed: ${error.message}`;
    }
  }

  async function loadRetention(generation, range) {
    for (const button of $$('.segments button')) {
      button.setAttribute('aria-pressed', String(button.dataset.viewer === state.viewer));
    }
    const box = $('#chart-retention');
    const insights = $('#insights');
    if (isPublic()) {
      box.replaceChildren(h('p', {class: 'muted'}, 'Retention needs a secret key: the retention endpoint is not open ' +
        'to public keys.'));
      insights.replaceChildren();
      return;
    }
    insights.replaceChildren(h('p', {class: 'loading'}, 'loading…'));
    const others = Object.keys(state.filters).filter((dimension) => dimension !== 'viewer');
    $('#retention-caption').textContent = others.length
      ? `all ${state.viewer === 'all' ? '' : `${state.viewer} `}viewers of the video: the retention API filters by viewer only`
      : `share of starting viewers still watching at each point of the video`;
    await panel(box, async () => {
      const answer = await api(`/v1/retention/accounts/${account()}/videos/${encodeURIComponent(state.video)}`,
        {viewer: state.viewer, ...range.params}, generation);
      await domReady;
      if (generation !== state.generation) return;
      const points = answer.points;
      const starts = points[0].viewers;
      const withTime = answer.duration_s
        ? (p) => `${p} % (${Math.round((p / 100) * answer.duration_s)} s)` : (p) => `${p} %`;
      chart(box, {xs: points.map((p) => p.percentile), time: false, yKind: 'percent', xFormat: (p) => `${p} %`,
        xLegend: withTime,
        series: [{label: 'Still watching', color: COLORS.retention, values: points.map((p) => p.retention_percentage)}],
        description: `Retention over ${points.length} points of the video: ${answer.insights.completion_rate} % ` +
          'reach the end.'});
      renderInsights(insights, answer.insights, starts);
    });
  }

  function renderInsights(container, insights, starts) {
    const list = (items) => (items.length ? h('ul', null, ...items.map((item) => h('li', null, item))) : null);
    const dropoffs = list(insights.largest_dropoffs.slice(0, 3).map((d) => `at ${d.percentile} %: −${d.retention_loss} points`));
    const replays = list(insights.replay_hotspots.slice(0, 3).map((r) =>
      `at ${r.percentile} %: ${r.replays} replays (${Math.round(r.replay_rate * 100)} % of viewers)`));
    const rows = [
      ['Plays at the start', NUMBER.format(starts)],
      ['Average retention', `${insights.average_retention} %`],
      ['Completion', `${insights.completion_rate} %`],
      ['Half the audience gone by', insights.fifty_percent_point === null ? 'never below 50 %'
        : `${insights.fifty_percent_point} % of the video`],
      ['Largest drop-offs', dropoffs || 'none'],
      ['Replayed most at', replays || 'no replays'],
    ];
    container.replaceChildren(h('dl', {class: 'insights'}, ...rows.flatMap(([term, value]) => [
      h('dt', null, term), h('dd', {'data-insight': term}, value)])));
  }

  async function loadSegments(generation, range) {
    const container = $('#segments-table');
    const columns = topColumns().slice(0, 3);
    if (!columns.length) return;
    await panel(container, async () => {
      const answer = await api(EVENTS(), {dimensions: 'viewer', metrics: columns.map((c) => c.metric).join(','),
        where: whereFor({withViewer: false}), ...range.params}, generation);
      if (generation !== state.generation) return;
      const rows = answer.data.map((row) => h('tr', {'data-viewer': row.dimensions.viewer},
        h('td', null, h('button', {type: 'button', class: 'linkish', 'aria-pressed': String(state.viewer === row.dimensions.viewer),
          onclick: () => go({viewer: state.viewer === row.dimensions.viewer ? 'all' : row.dimensions.viewer})},
        row.dimensions.viewer)),
        ...columns.map((c) => h('td', {class: 'num', 'data-metric': c.metric, 'data-value': JSON.stringify(row.totals[c.metric])},
          format(row.totals[c.metric], c.kind)))));
      container.replaceChildren(h('table', {class: 'table'},
        h('thead', null, h('tr', null, h('th', {scope: 'col'}, 'Viewers'),
          ...columns.map((c) => h('th', {scope: 'col', class: 'num'}, c.label)))),
        h('tbody', null, ...(rows.length ? rows : [h('tr', null, h('td', {colspan: 4, class: 'muted'}, 'No views.'))]))));
    });
  }

  // ------------------------------------------------------------------ live

  function liveFields() {
    return Object.keys(LIVE_FIELDS).filter((field) => LIVE_FIELDS[field].every(allowed));
  }

  function startLive() {
    stopLive();
    const generation = ++state.generation;
    renderChips($('#live-chips'));
    const live = state.live = {generation, socket: null, attempt: 0, timer: null, stopped: false, chartTimer: null};
    $('#live-error').hidden = true;
    for (const id of ['#live-by-video', '#live-by-country', '#live-by-device', '#live-tiles']) $(id).replaceChildren();
    // A public key reads only some fields: the lists it may not read are not shown at all.
    const fields = liveFields();
    for (const [field, id] of [['by_video', '#live-by-video'], ['by_country', '#live-by-country'],
      ['by_device_type', '#live-by-device']]) {
      $(id).parentElement.hidden = !fields.includes(field);
    }
    $('#live-viewers').textContent = '–';
    $('#live-viewers').dataset.value = '';
    connect(live);
    if (allowed('ccu')) {
      loadLiveChart(live);
      live.chartTimer = setInterval(() => loadLiveChart(live), 10000);
    } else {
      $('#chart-live').replaceChildren(h('p', {class: 'muted'}, 'This key may not read ccu.'));
    }
  }

  function stopLive() {
    const live = state.live;
    if (!live) return;
    live.stopped = true;
    clearTimeout(live.timer);
    clearInterval(live.chartTimer);
    if (live.socket) live.socket.close(1000, 'left the live page');
    state.live = null;
  }

  function liveStatus(text, kind) {
    const status = $('#live-status');
    status.textContent = text;
    status.dataset.state = kind;
  }

  /** The push channel: the key as a subprotocol value beside "vidpulse" (a WebSocket cannot send headers). */
  function connect(live) {
    const fields = liveFields();
    const query = new URLSearchParams({fields: fields.join(',')});
    const where = whereFor();
    if (where) query.set('where', where);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/v1/live/accounts/${account()}?${query}`,
      ['vidpulse', state.key]);
    live.socket = socket;
    live.refusal = null;
    liveStatus(live.attempt ? 'reconnecting…' : 'connecting…', 'connecting');
    socket.onmessage = (event) => {
      if (live.stopped) return;
      const message = JSON.parse(event.data);
      if (message.error) {
        live.refusal = message;
        return;
      }
      live.attempt = 0;
      liveStatus('live', 'live');
      renderLive(message);
    };
    socket.onclose = (event) => {
      if (live.stopped || live.socket !== socket) return;
      onLiveClosed(live, event.code, live.refusal);
    };
  }

  /** Close codes are 4000 + the REST status: refusals that cannot heal stop; the rest reconnect with back-off. */
  function onLiveClosed(live, code, refusal) {
    const reason = refusal ? refusal.error : '';
    if (code === 4401) {
      signOut('This key was refused on the live channel (401): it is wrong or was revoked. Paste a valid key.');
      return;
    }
    if (code === 4403 || code === 4400 || code === 4501) {
      const box = $('#live-error');
      box.hidden = false;
      box.textContent = code === 4403 ? `Outside this key's scope (403): ${reason}`
        : code === 4501 ? `Live figures are not available on this server (501): ${reason}`
          : `The live channel refused the question (400): ${reason}`;
      liveStatus('stopped', 'stopped');
      return;
    }
    const base = code === 4429 ? 10 : LIVE_BACKOFF_S[Math.min(live.attempt, LIVE_BACKOFF_S.length - 1)];
    const delay = base * (0.8 + Math.random() * 0.4);
    live.attempt++;
    const why = code === 4429 ? 'too many requests (429), slowing down'
      : code === 4503 ? 'the live view is still starting (503)' : 'connection lost';
    liveStatus(`${why}: reconnecting in ${Math.round(delay)} s`, code === 4429 ? 'slow-down' : 'retrying');
    live.timer = setTimeout(() => {
      if (!live.stopped) connect(live);
    }, delay * 1000);
  }

  function renderLive(answer) {
    const current = answer.current || {};
    const trend = answer.trend || {};
    const quality = answer.quality || {};
    const viewers = $('#live-viewers');
    if ('viewers' in current) {
      viewers.dataset.value = JSON.stringify(current.viewers);
      viewers.textContent = NUMBER.format(current.viewers);
    }
    const parts = [];
    if (trend.viewers_change_pct !== undefined) {
      const change = trend.viewers_change_pct;
      parts.push(change === null ? 'no viewers 5 minutes ago'
        : `${change > 0 ? '▲ +' : change < 0 ? '▼ −' : '± '}${ONE_DECIMAL.format(Math.abs(change))} % vs 5 minutes ago`);
    }
    if (trend.trend) parts.push(trend.trend);
    const trendBox = $('#live-trend');
    trendBox.textContent = parts.join(' · ');
    trendBox.dataset.trend = trend.trend || '';
    trendBox.className = trend.trend === 'increasing' ? 'good' : trend.trend === 'decreasing' ? 'bad' : 'muted';
    $('#live-peak').textContent = trend.peak_viewers === undefined ? ''
      : `Peak of the last 30 minutes: ${NUMBER.format(trend.peak_viewers)}` +
        `${trend.peak_at ? ` at ${clock(Date.parse(trend.peak_at)).slice(0, 5)}` : ''}`;
    $('#live-updated').textContent = `as of ${clock(Date.parse(answer.timestamp))} ${state.tz}`;
    const tiles = [
      ['plays_per_minute', 'Plays, last 60 s', current.plays_per_minute, 'count'],
      ['watch_seconds_per_minute', 'Watch minutes, last 60 s',
        current.watch_seconds_per_minute === undefined ? undefined : current.watch_seconds_per_minute / 60, 'minutes'],
      ['error_rate', 'Error rate, 5 min', quality.error_rate, 'ratio'],
      ['rebuffer_ratio', 'Rebuffer ratio, 5 min', quality.rebuffer_ratio, 'ratio'],
      ['exit_before_start_rate', 'Exits before start, 5 min', quality.exit_before_start_rate, 'ratio'],
      ['ttff_p50_ms', 'TTFF p50, 5 min', quality.ttff_p50_ms, 'ms'],
      ['ttff_p95_ms', 'TTFF p95, 5 min', quality.ttff_p95_ms, 'ms'],
    ].filter(([, , value]) => value !== undefined);
    $('#live-tiles').replaceChildren(...tiles.map(([name, text, value, kind]) => h('div', {class: 'tile', 'data-field': name},
      h('div', {class: 'tile-label'}, text),
      h('div', {class: 'tile-value', 'data-value': JSON.stringify(value)}, format(value, kind)))));
    if (answer.by_video) {
      const rows = answer.by_video;
      $('#live-by-video').replaceChildren(rows.length ? h('ol', {class: 'barlist'}, ...rows.map((row) => {
        const max = Math.max(1, ...rows.map((r) => r.viewers));
        return h('li', null, h('a', {class: 'bar-row', href: hashFor({route: 'video', video: row.video}),
          'data-video': row.video},
        h('span', {class: 'bar', style: `width:${(100 * row.viewers) / max}%`, 'aria-hidden': 'true'}),
        h('span', {class: 'bar-label'}, row.video),
        h('span', {class: 'bar-value', 'data-value': JSON.stringify(row.viewers)},
          `${NUMBER.format(row.viewers)} watching · ${NUMBER.format(row.plays_per_minute)} plays/min`)));
      })) : h('p', {class: 'muted'}, 'Nobody is watching right now.'));
    }
    for (const [field, dimension, id] of [['by_country', 'country', '#live-by-country'],
      ['by_device_type', 'device_type', '#live-by-device']]) {
      if (!answer[field]) continue;
      const rows = answer[field].map((row) => ({value: row[dimension], count: row.viewers, plays: row.plays_per_minute}));
      $(id).replaceChildren(rows.length ? barList(dimension, rows, 'viewers',
        {extra: (row) => ` watching · ${NUMBER.format(row.plays)} plays/min`}) : h('p', {class: 'muted'}, 'Nobody right now.'));
    }
  }

  /** Closed minutes from /v1/timeseries (1-minute ccu over the last 30), asked again as minutes pass. */
  async function loadLiveChart(live) {
    const end = floorMinute(Date.now()) + MINUTE;
    const start = end - 30 * MINUTE;
    const box = $('#chart-live');
    try {
      const answer = await api(TIMESERIES(), {dimensions: 'account', metrics: 'ccu', where: whereFor(),
        bucket_duration: '1m', from: start, to: end - 1}, live.generation);
      await domReady;
      if (live.stopped) return;
      const timestamps = [];
      for (let at = start; at < end; at += MINUTE) timestamps.push(at);
      const values = seriesOf(answer, 'ccu', timestamps);
      const key = `${start}:${values.join(',')}`;
      if (box.dataset.drawn === key) return;  // unchanged: keep the chart (and the reader's cursor) as it is
      box.dataset.drawn = key;
      box.dataset.start = String(start);
      chart(box, {xs: timestamps.map((ms) => ms / 1000),
        series: [{label: 'Concurrent viewers', color: COLORS.live, values}],
        description: `Concurrent viewers per minute over the last 30 minutes; now ${NUMBER.format(values[values.length - 1])}.`});
    } catch (error) {
      if (error instanceof Stale || live.stopped) return;
      if (error.status === 401) signOut('This key was refused (401). Paste a valid key.');
      else box.replaceChildren(h('p', {class: 'error-box'}, explain(error)));
    }
  }

  // ------------------------------------------------------------------ start

  /** The zone list (about 400 names) is built when the browser is idle: it is not needed for the first paint. */
  function fillZones(all) {
    const select = $('#tz');
    const zones = all && typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
    const first = [...new Set([BROWSER_TZ, 'UTC', state.tz])];
    select.replaceChildren(...first.map((zone) => h('option', {value: zone}, zone === BROWSER_TZ ? `${zone} (this device)` : zone)),
      ...zones.filter((zone) => !first.includes(zone)).map((zone) => h('option', {value: zone}, zone)));
    select.value = state.tz;
  }

  function wire() {
    $('#signin').addEventListener('submit', signIn);
    $('#signout').addEventListener('click', () => signOut());
    for (const button of $$('#ranges button')) {
      button.addEventListener('click', () => {
        if (button.dataset.range === 'custom') {
          const custom = $('#custom');
          custom.dataset.open = 'true';
          custom.hidden = false;
          $('#custom-from').focus();
          return;
        }
        $('#custom').dataset.open = 'false';
        state.top.offset = 0;
        go({range: button.dataset.range});
      });
    }
    $('#custom').addEventListener('submit', (event) => {
      event.preventDefault();
      const from = zonedToEpoch($('#custom-from').value, state.tz);
      const to = zonedToEpoch($('#custom-to').value, state.tz);
      if (from === null || to === null || from >= to) {
        $('#range-label').textContent = 'The start must come before the end.';
        return;
      }
      state.top.offset = 0;
      go({range: 'custom', from, to});
    });
    $('#tz').addEventListener('change', (event) => go({tz: event.target.value}));
    $('#top-prev').addEventListener('click', () => pageTop(-1));
    $('#top-next').addEventListener('click', () => pageTop(1));
    for (const button of $$('.segments button')) {
      button.addEventListener('click', () => go({viewer: button.dataset.viewer}));
    }
    window.addEventListener('hashchange', () => {
      readHash();
      render();
    });
  }

  function boot() {
    wire();
    readHash();
    fillZones(false);
    (window.requestIdleCallback || setTimeout)(() => fillZones(true));
    state.key = sessionStorage.getItem(STORE_KEY);
    if (!state.key) return showSignin();
    try {
      state.who = JSON.parse(sessionStorage.getItem(STORE_WHO) || 'null');
    } catch {
      state.who = null;
    }
    if (state.who) render();
    verify();  // renders (again) when the answer differs from the stored one
  }

  boot();
})();
