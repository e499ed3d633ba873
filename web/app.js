// mudbus web client: dev login or token, one WebSocket to mudbus-gateway
// (PROTOCOL.md section 3), a chat log and a command line. No dependencies.
// Every piece of server or user text reaches the page through textContent.
'use strict';

(() => {
  const SUBPROTOCOL = 'mudbus.v1';
  const LOG_MAX = 1000;                      // lines kept in the log
  const HISTORY_MAX = 100;                   // input lines kept for Up/Down
  const PENDING_MAX = 100;                   // commands awaiting their reply
  const FRAME_MAX = 16384;                   // bytes of one WebSocket frame
  const BACKOFF_MIN_MS = 500, BACKOFF_MAX_MS = 30000;
  const TOKEN_KEY = 'mudbus.token';          // sessionStorage: survives a reload, not the tab
  // Close codes that end the session; every other close is retried with backoff.
  const FINAL_CLOSES = {
    4001: 'session refused: unauthorized or token expired',
    4003: 'session refused: forbidden',
  };
  const CLOSE_REASONS = {
    1009: 'a frame was too large', 1007: 'a frame was not valid UTF-8',
    4008: 'the connection was too slow', 4009: 'the server is shutting down',
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'), room: $('room'), me: $('me'), signout: $('signout'),
    signin: $('signin'), loginForm: $('login-form'), loginName: $('login-name'),
    loginParty: $('login-party'), loginAdmin: $('login-admin'),
    tokenForm: $('token-form'), tokenInput: $('token-input'), signinError: $('signin-error'),
    chat: $('chat'), log: $('log'), inputForm: $('input-form'), input: $('input'),
  };

  const state = {
    token: null, ws: null, me: null, room: null,
    wantRoom: null,        // room joined with /join, re-joined after a reconnect
    opened: false,         // the current socket reached 'open'
    attempt: 0, retryTimer: null,
    lastSeq: 0, nextId: 1,
    pending: new Map(),    // command id -> {type, text, sentAt}
    ids: new Map(),        // lower-cased display name -> player id, from what we have seen
    names: new Map(),      // player id -> display name
    history: [], histPos: 0, draft: '',
  };

  // ---------- log ----------

  function clock(ts) {
    const d = ts ? new Date(ts) : new Date();
    return isNaN(d) ? '--:--:--' : d.toTimeString().slice(0, 8);
  }

  function el(tag, className, text) {
    const e = document.createElement(tag);
    e.className = className;
    e.textContent = text;
    return e;
  }

  // kind: a channel (say, local, ...) or room / info / error / skipped / event.
  function line(kind, text, opts = {}) {
    const atBottom = ui.log.scrollTop + ui.log.clientHeight >= ui.log.scrollHeight - 4;
    const li = el('li', 'line ' + kind + (opts.echo ? ' echo' : ''), '');
    li.dataset.kind = kind;
    const time = el('time', 'time', clock(opts.ts));
    if (opts.ts) time.dateTime = opts.ts;
    li.append(time, el('span', 'label', opts.label || kind), el('span', 'text', text));
    if (opts.echo) li.append(el('span', 'tag', 'echo'));
    ui.log.append(li);
    while (ui.log.childElementCount > LOG_MAX) ui.log.firstElementChild.remove();
    if (atBottom) ui.log.scrollTop = ui.log.scrollHeight;
    return li;
  }
  const info = (text) => line('info', text);
  const error = (text, ts) => line('error', text, { ts });

  function setStatus(text, cls) {
    ui.status.textContent = text;
    ui.status.className = 'status ' + cls;
  }

  function setRoom(room) {
    state.room = room;
    ui.room.textContent = room || '-';
  }

  // ---------- commands ----------

  const HELP = [
    'text                   say to the room (//text says "/text")',
    '/say text              say to the room',
    '/local text            to the room\'s subzone',
    '/global text           to everyone online',
    '/whisper name text     to one player (alias /w)',
    '/emote text, /me text  act in the room',
    '/pose text             set your pose in the room',
    '/party text            to your party',
    '/join room             move to another room',
    '/system text           (admins) to everyone online',
    '/mute name [minutes]   ignore a player; /unmute name; /mutes lists them',
    '/ping, /clear, /quit   round trip, clear the log, sign out',
    'Up/Down history, Esc clears the line',
  ];

  // A player is named by id or display name; dev-login ids are lower-cased names.
  function playerId(name) {
    return state.ids.get(name.toLowerCase()) || name.toLowerCase();
  }

  function rest(args, usage) {
    if (!args) throw new Error('usage: ' + usage);
    return args;
  }
  function split1(args, usage) {
    const m = /^(\S+)\s*([\s\S]*)$/.exec(args || '');
    if (!m) throw new Error('usage: ' + usage);
    return [m[1], m[2]];
  }
  const content = (type) => (a) => ({ type, content: rest(a, '/' + type + ' text') });

  const COMMANDS = {
    say: content('say'), local: content('local'), global: content('global'),
    emote: content('emote'), me: content('emote'), pose: content('pose'),
    party: content('party'), system: content('system'),
    whisper: (a) => {
      const [who, text] = split1(a, '/whisper name text');
      return { type: 'whisper', target: playerId(who), content: rest(text, '/whisper name text') };
    },
    join: (a) => ({ type: 'join', room_id: split1(a, '/join room')[0] }),
    mute: (a) => {
      const [who, mins] = split1(a, '/mute name [minutes]');
      const cmd = { type: 'mute', target: playerId(who) };
      if (mins) {
        if (!/^\d+$/.test(mins.trim())) throw new Error('usage: /mute name [minutes]');
        cmd.minutes = Number(mins);
      }
      return cmd;
    },
    unmute: (a) => ({ type: 'unmute', target: playerId(split1(a, '/unmute name')[0]) }),
    mutes: () => ({ type: 'mutes' }),
    ping: () => ({ type: 'ping' }),
    help: () => { HELP.forEach(info); },
    clear: () => { ui.log.replaceChildren(); },
    quit: () => { signOut('signed out'); },
  };
  COMMANDS.w = COMMANDS.whisper;

  // Returns a command frame to send, or null when the line was handled here.
  function parse(text) {
    if (!text.startsWith('/') || text.startsWith('//')) {
      return { type: 'say', content: text.startsWith('//') ? text.slice(1) : text };
    }
    const m = /^\/(\S+)\s*([\s\S]*)$/.exec(text);
    const fn = m && COMMANDS[m[1].toLowerCase()];
    if (!fn) throw new Error('unknown command ' + (m ? m[1] : text) + ' (try /help)');
    return fn(m[2]) || null;
  }

  function send(cmd, text) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      throw new Error('not connected: nothing was sent');
    }
    cmd.id = 'c' + state.nextId++;
    const frame = JSON.stringify(cmd);
    if (new TextEncoder().encode(frame).length > FRAME_MAX) throw new Error('too large to send');
    state.pending.set(cmd.id, { type: cmd.type, text, sentAt: performance.now(), room: cmd.room_id });
    if (state.pending.size > PENDING_MAX) state.pending.delete(state.pending.keys().next().value);
    state.ws.send(frame);
  }

  // The reply to `id`, or when it carries none, to the oldest pending command of `type`.
  function settle(id, type) {
    let key = id;
    if (key === undefined) {
      for (const [k, p] of state.pending) if (p.type === type) { key = k; break; }
    }
    const p = state.pending.get(key);
    state.pending.delete(key);
    return p;
  }

  function submit(text) {
    if (!text.trim()) return;
    try {
      const cmd = parse(text);
      if (cmd) send(cmd, text);
    } catch (e) {
      error(e.message);
      return;  // keep the line so it can be fixed
    }
    if (state.history[state.history.length - 1] !== text) state.history.push(text);
    if (state.history.length > HISTORY_MAX) state.history.shift();
    state.histPos = state.history.length;
    ui.input.value = '';
  }

  // ---------- server frames ----------

  function shorten(s, n = 60) { return s.length > n ? s.slice(0, n - 1) + '…' : s; }

  function formatMutes(d) {
    const when = (m) => m.expires_at ? ' until ' + new Date(m.expires_at).toLocaleString() : '';
    const why = (m) => m.reason ? ' (' + m.reason + ')' : '';
    const players = (d.players || []).map((m) => m.target + when(m) + why(m));
    return [
      'muted players: ' + (players.length ? players.join(', ') : 'none'),
      'muted channels: ' + ((d.channels || []).map((c) => c.channel || c).join(', ') || 'none'),
      'global mute: ' + (d.global ? 'yes' + when(d.global) + why(d.global) : 'no'),
    ];
  }

  function remember(id, name) {
    if (typeof id !== 'string' || typeof name !== 'string') return;
    state.ids.set(name.toLowerCase(), id);
    state.names.set(id, name);
  }

  function chat(d, ts) {
    remember(d.sender_id, d.player_name);
    remember(d.target_id, d.target_name);
    let text = typeof d.message === 'string' ? d.message : d.player_name + ': ' + d.content;
    if (d.echo && d.channel === 'whisper') {
      const to = d.target_name || state.names.get(d.target_id) || d.target_id;
      text = `${d.player_name} whispers to ${to}: ${d.content}`;
    }
    const channel = /^[a-z]+$/.test(d.channel) ? d.channel : 'other';
    line(channel, text, { ts: d.timestamp || ts, echo: !!d.echo, label: d.channel });
  }

  function onFrame(f) {
    const d = (f && typeof f.data === 'object' && f.data) || {};
    const ts = f.timestamp;
    if (typeof f.sequence_number === 'number') {
      if (state.lastSeq && f.sequence_number !== state.lastSeq + 1) {
        error(`sequence gap: frame ${f.sequence_number} after ${state.lastSeq}`);
      }
      state.lastSeq = f.sequence_number;
    }
    switch (f.event_type) {
      case 'welcome':
        state.me = { id: d.player_id, name: d.player_name };
        remember(d.player_id, d.player_name);
        ui.me.textContent = d.player_name || d.player_id;
        setRoom(d.room_id);
        state.attempt = 0;
        setStatus('connected', 'on');
        line('room', `welcome, ${d.player_name}: you are in ${d.room_id}`, { ts, label: 'room' });
        if (state.wantRoom && state.wantRoom !== d.room_id) send({ type: 'join', room_id: state.wantRoom }, '/join');
        break;
      case 'chat_message':
        chat(d, ts);
        break;
      case 'player_entered':
      case 'player_left': {
        remember(d.player_id, d.player_name);
        const room = d.room_id || f.room_id || '';
        const verb = f.event_type === 'player_entered' ? 'entered' : 'left';
        if (state.me && d.player_id === state.me.id) {  // our own moves: welcome and join acks tell them
          if (verb === 'entered') setRoom(room);
          break;
        }
        line('room', `${d.player_name || d.player_id} ${verb} ${room}`.trim(), { ts, label: verb });
        break;
      }
      case 'ack': {
        const p = settle(d.id);
        if (p && p.type === 'join') {
          setRoom(p.room);
          state.wantRoom = p.room;
          line('room', `you are in ${p.room}`, { ts, label: 'room' });
        }
        if (p && p.type === 'mute') info('muted (' + shorten(p.text) + ')');
        if (p && p.type === 'unmute') info('unmuted (' + shorten(p.text) + ')');
        break;
      }
      case 'error': {
        const p = d.id !== undefined ? settle(d.id) : null;
        let text = `${d.code}: ${d.message}`;
        if (p) text += `  ← ${shorten(p.text)}`;
        if (d.retry_after_ms) text += ` (retry in ${Math.ceil(d.retry_after_ms / 1000)} s)`;
        const li = error(text, ts);
        li.dataset.code = d.code;
        if (d.id !== undefined) li.dataset.cmdId = d.id;
        break;
      }
      case 'mutes':
        settle(d.id, 'mutes');
        formatMutes(d).forEach(info);
        break;
      case 'messages_skipped':
        line('skipped', `${d.count} message(s) skipped: ${d.reason || 'slow connection'}`, { ts, label: 'skipped' });
        break;
      case 'pong': {
        const p = settle(d.id, 'ping');
        info(p ? `pong: ${Math.round(performance.now() - p.sentAt)} ms` : 'pong');
        break;
      }
      case 'game_tick':
        break;
      default:
        line('event', `${f.event_type}: ${shorten(JSON.stringify(d), 200)}`, { ts, label: 'event' });
    }
  }

  // ---------- connection ----------

  function tokenExpired(token) {
    try {
      const b64 = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const exp = JSON.parse(atob(b64)).exp;
      return typeof exp === 'number' && exp * 1000 <= Date.now();
    } catch (_) {
      return false;  // not ours to judge: the server decides
    }
  }

  function connect() {
    clearTimeout(state.retryTimer);
    if (tokenExpired(state.token)) return signOut('token expired: sign in again');
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/ws?token=${encodeURIComponent(state.token)}`, SUBPROTOCOL);
    state.ws = ws;
    state.opened = false;
    state.lastSeq = 0;
    setStatus(state.attempt ? `reconnecting (try ${state.attempt + 1})` : 'connecting', 'wait');
    ws.onopen = () => { state.opened = true; setStatus('connected, waiting for welcome', 'wait'); };
    ws.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (_) { return error('unreadable frame from server'); }
      onFrame(f);
    };
    ws.onclose = (ev) => { if (state.ws === ws) onClose(ev); };
  }

  async function onClose(ev) {
    state.ws = null;
    if (state.pending.size) info(`${state.pending.size} command(s) unconfirmed when the connection closed`);
    state.pending.clear();
    if (FINAL_CLOSES[ev.code]) return signOut(FINAL_CLOSES[ev.code]);
    if (!state.opened) {
      // A refused upgrade (HTTP 401) and a server that is down look the same
      // to a browser; when the server says it is ready, the token was refused.
      const ready = await fetch('/readyz', { cache: 'no-store' }).then((r) => r.ok, () => false);
      if (!state.token || state.ws) return;  // signed out or signed in anew meanwhile
      if (ready) return signOut('sign-in refused / token expired');
    }
    const why = CLOSE_REASONS[ev.code] || (state.opened ? 'connection lost' : 'server unreachable');
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt) * (0.5 + Math.random() / 2);
    state.attempt = Math.min(state.attempt + 1, 16);
    setStatus(`offline, retrying in ${(delay / 1000).toFixed(1)} s`, 'off');
    error(`disconnected (${ev.code || 'no code'}: ${why}); retrying in ${(delay / 1000).toFixed(1)} s`);
    state.retryTimer = setTimeout(connect, delay);
  }

  function startSession(token) {
    state.token = token;
    state.attempt = 0;
    state.wantRoom = null;
    sessionStorage.setItem(TOKEN_KEY, token);
    ui.signinError.textContent = '';
    ui.signin.hidden = true;
    ui.chat.hidden = false;
    ui.signout.hidden = false;
    ui.input.focus();
    connect();
  }

  function signOut(reason) {
    clearTimeout(state.retryTimer);
    const ws = state.ws;
    Object.assign(state, { token: null, ws: null, me: null });
    if (ws) ws.close(1000, 'sign out');
    sessionStorage.removeItem(TOKEN_KEY);
    state.pending.clear();
    setRoom(null);
    ui.me.textContent = '-';
    setStatus('signed out', 'off');
    ui.chat.hidden = true;
    ui.signout.hidden = true;
    ui.signin.hidden = false;
    ui.signinError.textContent = reason && reason !== 'signed out' ? reason : '';
    ui.loginName.focus();
  }

  async function devLogin(name, party, admin) {
    const body = { name };
    if (party) body.party = party;
    if (admin) body.admin = true;
    let res;
    try {
      res = await fetch('/auth/dev-login', {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
      });
    } catch (_) {
      throw new Error('server unreachable');
    }
    if (res.status === 404) throw new Error('dev login is disabled on this server: paste a token');
    const j = await res.json().catch(() => ({}));
    if (!res.ok || typeof j.token !== 'string') throw new Error(j.error || `sign-in failed (HTTP ${res.status})`);
    return j.token;
  }

  // ---------- wiring ----------

  ui.loginForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    ui.signinError.textContent = '';
    try {
      startSession(await devLogin(ui.loginName.value.trim(), ui.loginParty.value.trim(), ui.loginAdmin.checked));
    } catch (e) {
      ui.signinError.textContent = e.message;
    }
  });

  ui.tokenForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = ui.tokenInput.value.trim();
    if (tokenExpired(token)) { ui.signinError.textContent = 'token expired'; return; }
    ui.tokenInput.value = '';
    startSession(token);
  });

  ui.signout.addEventListener('click', () => signOut('signed out'));

  ui.inputForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    submit(ui.input.value);
  });

  ui.input.addEventListener('keydown', (ev) => {
    const h = state.history;
    if (ev.key === 'Escape') {
      ui.input.value = '';
      state.histPos = h.length;
    } else if (ev.key === 'ArrowUp' && state.histPos > 0) {
      if (state.histPos === h.length) state.draft = ui.input.value;
      ui.input.value = h[--state.histPos];
    } else if (ev.key === 'ArrowDown' && state.histPos < h.length) {
      state.histPos++;
      ui.input.value = state.histPos === h.length ? state.draft : h[state.histPos];
    } else {
      return;
    }
    ev.preventDefault();
  });

  // Typing anywhere lands in the input; selecting text in the log still works.
  document.addEventListener('keydown', (ev) => {
    if (ui.chat.hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t instanceof HTMLButtonElement) return;
    if (ev.key.length === 1 || ev.key === 'Enter') ui.input.focus();
  });

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) startSession(saved); else ui.loginName.focus();
})();
