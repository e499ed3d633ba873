// Browser test of web/ against a running mudbus-gateway (started by run.sh):
// three players sign in through the UI and chat; whispers stay private,
// errors come back inline, nothing a player types becomes markup.
//
// Env: BASE_URL (the gateway, e.g. http://127.0.0.1:8080), CHROMIUM
// (default /usr/bin/chromium), E2E_ARTIFACTS (default ./artifacts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE_URL = process.env.BASE_URL;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.E2E_ARTIFACTS || path.join(import.meta.dirname, 'artifacts');
const WAIT_MS = 10000;     // for anything that should arrive
const QUIET_MS = 750;      // for anything that should not, after a later message has arrived
const RUN = Math.random().toString(36).slice(2, 8);
const ROOM = `earth_e2e_${RUN}_hall`;

assert.ok(BASE_URL, 'BASE_URL must point at a running mudbus-gateway (use run.sh)');

let browser;
let ready = false;          // the players are signed in: the later steps need it
const pages = {};           // name -> Page
const pageErrors = [];      // uncaught exceptions and console errors in any page

// ---------- helpers ----------

async function dumpLog(page) {
  return page.$$eval('#log li', (lis) => lis.map((li) => `  [${li.dataset.kind}${li.classList.contains('echo') ? ' echo' : ''}] ${li.querySelector('.text').textContent}`).join('\n'));
}

// Wait until `who`'s log has a line of `kind` whose text passes `match`
// (a string for an exact match, or a RegExp). Returns the line's data. On a
// timeout the error shows `who`'s log, and `from`'s (the sender's) if given.
async function waitLine(who, kind, match, { echo = false, from } = {}) {
  const page = pages[who];
  const m = match instanceof RegExp ? { re: match.source, flags: match.flags } : { text: match };
  try {
    const handle = await page.waitForFunction(({ kind, m, echo }) => {
      const ok = (t) => (m.re ? new RegExp(m.re, m.flags).test(t) : t === m.text);
      const li = [...document.querySelectorAll('#log li')].find((li) => li.dataset.kind === kind
        && li.classList.contains('echo') === echo && ok(li.querySelector('.text').textContent));
      return li && { text: li.querySelector('.text').textContent, code: li.dataset.code, cmdId: li.dataset.cmdId, color: getComputedStyle(li.querySelector('.text')).color };
    }, { kind, m, echo }, { timeout: WAIT_MS });
    return await handle.jsonValue();
  } catch (e) {
    if (!/Timeout/.test(e.message)) throw e;
    const sender = from ? `\n${from}'s log:\n${await dumpLog(pages[from])}` : '';
    throw new Error(`${who}: no ${echo ? 'echo ' : ''}"${kind}" line matching ${match} within ${WAIT_MS} ms; ${who}'s log:\n${await dumpLog(page)}${sender}`);
  }
}

async function logTexts(who) {
  return pages[who].$$eval('#log li .text', (els) => els.map((e) => e.textContent));
}

// Type into the command line like a person and press Enter.
async function type(who, text) {
  const input = pages[who].locator('#input');
  await input.focus();
  await input.fill(text);
  await input.press('Enter');
}

async function roomOf(who) {
  return (await pages[who].textContent('#room')).trim();
}

async function waitRoom(who, room) {
  try {
    await pages[who].waitForFunction((r) => document.getElementById('room').textContent === r, room, { timeout: WAIT_MS });
  } catch (e) {
    throw new Error(`${who}: room shown is "${await roomOf(who)}", expected "${room}"; log:\n${await dumpLog(pages[who])}`);
  }
}

async function openPage(who) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 640 } });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(`${who}: ${e.message}`));
  page.on('console', (msg) => {
    // A refused WebSocket upgrade is logged by Chromium itself; that one is expected.
    if (msg.type() === 'error' && !/WebSocket connection to .* failed/.test(msg.text())) pageErrors.push(`${who}: console: ${msg.text()}`);
  });
  pages[who] = page;
  await page.goto(BASE_URL + '/');
  return page;
}

async function signIn(who) {
  const page = await openPage(who);
  await page.waitForSelector('#login-name:focus', { timeout: WAIT_MS });  // keyboard-first
  await page.keyboard.type(who);
  await page.keyboard.press('Enter');
  const welcome = await waitLine(who, 'room', new RegExp(`^welcome, ${who}: you are in [A-Za-z0-9_-]+$`));
  await page.waitForSelector('#status.on', { timeout: WAIT_MS });
  assert.equal(await page.textContent('#me'), who);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'input', `${who}: the input has the focus after sign-in`);
  return welcome.text.split(' ').pop();
}

// A step that needs the signed-in players; skipped (not passed) without them.
function step(name, fn) {
  test(name, (t) => (ready ? fn(t) : t.skip('the players did not sign in')));
}

// ---------- the test ----------

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}`);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
}, { timeout: 30000 });

after(async () => {
  try {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    for (const [who, page] of Object.entries(pages)) {
      const file = who === 'Alice' ? 'chat.png' : `chat-${who.toLowerCase()}.png`;
      await page.screenshot({ path: path.join(ARTIFACTS, file) });
    }
  } finally {
    await browser?.close();  // an open browser would keep node alive
  }
}, { timeout: 30000 });

test('three players sign in through the UI and start in the same room', async () => {
  const rooms = {};
  for (const who of ['Alice', 'Bob', 'Carol']) rooms[who] = await signIn(who);
  assert.equal(rooms.Bob, rooms.Alice, 'Alice and Bob start in the same room');
  assert.equal(rooms.Carol, rooms.Alice, 'Alice and Carol start in the same room');
  for (const who of ['Alice', 'Bob', 'Carol']) assert.equal(await roomOf(who), rooms.Alice);
  ready = true;
});

step('/join moves everyone to a fresh room; the others see who entered', async () => {
  for (const who of ['Alice', 'Bob', 'Carol']) {
    await type(who, `/join ${ROOM}`);
    await waitRoom(who, ROOM);
    await waitLine(who, 'room', `you are in ${ROOM}`);
  }
  await waitLine('Alice', 'room', `Bob entered ${ROOM}`);
  await waitLine('Alice', 'room', `Carol entered ${ROOM}`);
  await waitLine('Bob', 'room', `Carol entered ${ROOM}`);
});

step('Alice says something: Bob and Carol see it, Alice sees her echo', async () => {
  const text = `hello from Alice ${RUN}`;
  await type('Alice', text);
  assert.equal(await pages.Alice.inputValue('#input'), '', 'the input is cleared after sending');
  await waitLine('Bob', 'say', `Alice says: ${text}`, { from: 'Alice' });
  await waitLine('Carol', 'say', `Alice says: ${text}`, { from: 'Alice' });
  await waitLine('Alice', 'say', `Alice says: ${text}`, { echo: true });
  assert.ok(!(await logTexts('Alice')).some((t, i, a) => t === `Alice says: ${text}` && a.indexOf(t) !== i),
    'Alice gets one copy of her own message');
});

step('a whisper reaches Bob only', async () => {
  const secret = `psst ${RUN}`;
  await type('Alice', `/w Bob ${secret}`);
  await waitLine('Bob', 'whisper', `Alice whispers to you: ${secret}`, { from: 'Alice' });
  await waitLine('Alice', 'whisper', `Alice whispers to Bob: ${secret}`, { echo: true });
  // Carol is listening: once she has a later room message, the whisper had its chance.
  const after = `after the whisper ${RUN}`;
  await type('Alice', `/say ${after}`);
  await waitLine('Carol', 'say', `Alice says: ${after}`, { from: 'Alice' });
  await new Promise((r) => setTimeout(r, QUIET_MS));
  const leaked = (await logTexts('Carol')).filter((t) => t.includes(secret));
  assert.deepEqual(leaked, [], 'Carol must not see the whisper');
});

step('a say over 500 characters is refused inline with too_long, and not delivered', async () => {
  const long = 'x'.repeat(501);
  await type('Alice', long);
  const err = await waitLine('Alice', 'error', /^too_long: /);
  assert.equal(err.code, 'too_long');
  assert.match(err.cmdId || '', /^c\d+$/, 'the error is matched to the command id that caused it');
  assert.match(err.text, /← x{10}/, 'the error names the command it answers');
  assert.equal(err.color, 'rgb(240, 113, 120)', 'errors are red');
  const marker = `after the long one ${RUN}`;
  await type('Alice', marker);
  await waitLine('Bob', 'say', `Alice says: ${marker}`, { from: 'Alice' });
  assert.ok(!(await logTexts('Bob')).some((t) => t.includes('x'.repeat(501))), 'the long say was not delivered');
});

step('a whisper to a player who is not online is refused with invalid_target', async () => {
  await type('Alice', `/w nobody_${RUN} are you there`);
  const err = await waitLine('Alice', 'error', /^invalid_target: .*← \/w nobody_/);
  assert.equal(err.code, 'invalid_target');
});

step('markup in a message is shown as text, never parsed', async () => {
  const evil = `<img src=x onerror="window.__pwned=1"><b>bold</b> ${RUN}`;
  await type('Alice', evil);
  await waitLine('Bob', 'say', `Alice says: ${evil}`, { from: 'Alice' });
  assert.equal(await pages.Bob.$$eval('#log img, #log b', (els) => els.length), 0, 'no element was created from the message');
  assert.equal(await pages.Bob.evaluate(() => window.__pwned), undefined);
});

step('keyboard: Up recalls history, Esc clears; /ping gets a pong; /help lists commands', async () => {
  const input = pages.Bob.locator('#input');
  await type('Bob', '/ping');
  await waitLine('Bob', 'info', /^pong: \d+ ms$/);
  await input.press('ArrowUp');
  assert.equal(await input.inputValue(), '/ping');
  await input.press('Escape');
  assert.equal(await input.inputValue(), '');
  await type('Bob', '/help');
  await waitLine('Bob', 'info', /^\/whisper name text/);
  await type('Bob', '/frobnicate');
  await waitLine('Bob', 'error', 'unknown command frobnicate (try /help)');
});

test('a forged token is refused and the page goes back to sign-in', async () => {
  const page = await openPage('Mallory');
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const forged = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'mallory', name: 'Mallory', exp: Math.floor(Date.now() / 1000) + 3600 })}.${'A'.repeat(43)}`;
  await page.fill('#token-input', forged);
  await page.click('#token-form button');
  try {
    await page.waitForFunction(() => !document.getElementById('signin').hidden
      && document.getElementById('signin-error').textContent === 'sign-in refused / token expired', null, { timeout: WAIT_MS });
  } catch (e) {
    throw new Error(`Mallory: not sent back to sign-in; error shown: "${await page.textContent('#signin-error')}", log:\n${await dumpLog(page)}`);
  }
  assert.equal(await page.evaluate(() => sessionStorage.getItem('mudbus.token')), null);
});

test('no page had a script error', () => {
  assert.deepEqual(pageErrors, []);
});
