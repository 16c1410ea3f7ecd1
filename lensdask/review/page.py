"""The grading page: HTML and JavaScript served by :mod:`lensdask.review.server`.

One page, no external resources. Keys: A/B/C/D grade the candidate shown and move on;
Left/Right (or P/N) go back and forth; T toggles colour / single band; + and - zoom.
The page shows the grader only the stamps, the candidate's ID and their own grades.
"""

from __future__ import annotations

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>lensdask grading</title>
<style>
  body { font-family: system-ui, sans-serif; background: #111; color: #eee; margin: 1.5em; }
  header { display: flex; gap: 2em; align-items: baseline; flex-wrap: wrap; }
  #stage { margin: 1em 0; min-height: 420px; }
  #stamp { image-rendering: pixelated; border: 1px solid #444; background: #000; }
  .grades button { font-size: 1.2em; min-width: 6em; margin-right: .4em; padding: .4em; }
  .grades button[aria-pressed="true"] { background: #2a7; color: #fff; }
  .nav button { margin-right: .4em; }
  #status { color: #aaa; min-height: 1.4em; }
  #status.error { color: #f66; }
  kbd { border: 1px solid #666; border-radius: 3px; padding: 0 .3em; }
</style>
</head>
<body>
<header>
  <strong>lensdask grading</strong>
  <span>grader: <span id="grader"></span></span>
  <span id="position"></span>
  <span id="progress"></span>
</header>
<div id="stage"><img id="stamp" alt="candidate stamp"></div>
<div id="candidate"></div>
<p class="grades">
  <button id="grade-A" data-grade="A" aria-pressed="false">A: sure lens</button>
  <button id="grade-B" data-grade="B" aria-pressed="false">B: probable</button>
  <button id="grade-C" data-grade="C" aria-pressed="false">C: possible</button>
  <button id="grade-D" data-grade="D" aria-pressed="false">D: not a lens</button>
</p>
<p class="nav">
  <button id="prev">&larr; previous</button>
  <button id="next">next &rarr;</button>
  <button id="toggle">colour / single band</button>
  <button id="zoom-in">zoom +</button>
  <button id="zoom-out">zoom &minus;</button>
  <span id="view"></span>
</p>
<p id="status"></p>
<p><kbd>A</kbd> <kbd>B</kbd> <kbd>C</kbd> <kbd>D</kbd> grade and go on,
<kbd>&larr;</kbd> <kbd>&rarr;</kbd> previous / next, <kbd>T</kbd> colour or single band,
<kbd>+</kbd> <kbd>&minus;</kbd> zoom.</p>
<script src="/app.js"></script>
</body>
</html>
"""

FORBIDDEN_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lensdask grading: no access</title></head>
<body><h1>No access</h1>
<p>This link has no valid access token. Ask the person who runs the grading server for
your personal link.</p></body></html>
"""

APP_JS = """'use strict';
(function () {
  const token = new URLSearchParams(location.search).get('token') || '';
  const $ = (id) => document.getElementById(id);
  let items = [], pos = 0, total = 0, graded = 0, kind = 'colour', zoom = 4, mono = 'r';
  let busy = false;

  function api(path) {
    return path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
  }
  function status(text, error) {
    $('status').textContent = text;
    $('status').className = error ? 'error' : '';
  }
  function render() {
    if (!items.length) { $('position').textContent = 'nothing to grade'; return; }
    const item = items[pos];
    $('stamp').src = api('/stamp/' + item.key + '?kind=' + kind);
    $('stamp').width = 101 * zoom;
    $('stamp').height = 101 * zoom;
    $('position').textContent = 'candidate ' + (pos + 1) + ' of ' + total;
    $('progress').textContent = graded + ' of ' + total + ' graded, ' + (total - graded) +
      ' left';
    $('candidate').textContent = item.id;
    $('view').textContent = (kind === 'colour' ? 'colour' : mono + ' band only') +
      ', zoom ' + zoom + 'x';
    for (const letter of ['A', 'B', 'C', 'D']) {
      $('grade-' + letter).setAttribute('aria-pressed', String(item.grade === letter));
    }
    document.body.dataset.position = String(pos);
  }
  function go(step) {
    pos = Math.min(Math.max(pos + step, 0), items.length - 1);
    render();
  }
  async function grade(letter) {
    if (busy || !items.length) return;
    busy = true;
    document.body.dataset.saving = '1';
    const item = items[pos];
    try {
      const response = await fetch(api('/api/grade'), {
        method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({key: item.key, grade: letter}),
      });
      const reply = await response.json();
      if (!response.ok) throw new Error(reply.error || response.statusText);
      item.grade = letter;
      graded = reply.graded;
      status('saved ' + letter + ' for ' + item.id);
      if (graded === total && pos === items.length - 1) {
        status('all ' + total + ' candidates graded, thank you');
      }
      if (pos < items.length - 1) pos += 1;
      render();
    } catch (err) {
      status('not saved: ' + err.message, true);
    } finally {
      busy = false;
      document.body.dataset.saving = '0';
    }
  }
  async function start() {
    const response = await fetch(api('/api/state'));
    if (!response.ok) { status('no access: invalid token', true); return; }
    const state = await response.json();
    items = state.items; total = state.total; graded = state.graded; mono = state.mono_band;
    $('grader').textContent = state.grader;
    const first = items.findIndex((item) => !item.grade);
    pos = first >= 0 ? first : Math.max(items.length - 1, 0);
    render();
    document.body.dataset.ready = '1';
  }
  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key;
    const upper = key.length === 1 ? key.toUpperCase() : key;
    if (['A', 'B', 'C', 'D'].includes(upper)) { grade(upper); }
    else if (key === 'ArrowLeft' || upper === 'P') { go(-1); }
    else if (key === 'ArrowRight' || upper === 'N') { go(1); }
    else if (upper === 'T') { kind = kind === 'colour' ? 'mono' : 'colour'; render(); }
    else if (key === '+' || key === '=') { zoom = Math.min(zoom + 1, 10); render(); }
    else if (key === '-') { zoom = Math.max(zoom - 1, 1); render(); }
    else { return; }
    event.preventDefault();
  });
  for (const letter of ['A', 'B', 'C', 'D']) {
    $('grade-' + letter).addEventListener('click', () => grade(letter));
  }
  $('prev').addEventListener('click', () => go(-1));
  $('next').addEventListener('click', () => go(1));
  $('toggle').addEventListener('click', () => {
    kind = kind === 'colour' ? 'mono' : 'colour'; render();
  });
  $('zoom-in').addEventListener('click', () => { zoom = Math.min(zoom + 1, 10); render(); });
  $('zoom-out').addEventListener('click', () => { zoom = Math.max(zoom - 1, 1); render(); });
  start().catch((err) => status('cannot load: ' + err.message, true));
})();
"""
