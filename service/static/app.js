// medcite's page: ask, watch the draft arrive, then read the verified answer with each citation's passage.
// Served by `medcite serve` at /. No build step, no dependencies. Everything from the model or the corpus is
// inserted with textContent, never as HTML. Conversations (whole answer objects) live in localStorage; the API
// key, when the server needs one, in sessionStorage (this tab only).

const STORE = "medcite.conversations.v1";
const KEY = "medcite.apiKey";
const MODES = {
  generated: "Written by the model and checked against the sources",
  extractive: "Quoted from the sources",
  no_answer: "The sources do not answer this",
  unsourced: "Answered without sources: nothing was checked",
  unverified: "Not checked against the sources",
};
const ERRORS = {
  401: "This server needs an API key. Enter it and ask again.",
  403: "This server refused the request: the API key is wrong or this action is off.",
  413: "The question is too long for this server.",
  503: "The server is busy. Wait a moment and ask again.",
  504: "No answer came within the server's time limit. Try again, or ask a shorter question.",
};

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
};

// Timing the page's own work, read by the browser tests: Enter to first draft text, and script time per token.
export const stats = { firstTokenMs: null, tokenScriptMs: [], submittedAt: 0 };
window.medciteStats = stats;

let conversations = load();
let current = conversations[0]?.id ?? null;
let controller = null;

function load() {
  try {
    const parsed = JSON.parse(localStorage.getItem(STORE) || "[]");
    return Array.isArray(parsed) ? parsed : [];
  } catch {
    return [];
  }
}

function save() {
  localStorage.setItem(STORE, JSON.stringify(conversations));
}

function conversation() {
  return conversations.find((c) => c.id === current) ?? null;
}

function newConversation() {
  const c = { id: crypto.randomUUID(), title: "", turns: [] };
  conversations.unshift(c);
  current = c.id;
  save();
  renderAll();
  $("question").focus();
}

function clearConversations() {
  // Questions about someone's health stay on a shared computer until removed: one control removes them all.
  if (!window.confirm("Remove every conversation kept in this browser?")) return;
  controller?.abort();
  localStorage.removeItem(STORE);
  conversations = [];
  current = null;
  $("source").hidden = true;
  renderAll();
  $("status").textContent = "Conversations cleared from this browser.";
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function errorSentence(response) {
  let detail = "";
  try {
    detail = (await response.json()).detail || "";
  } catch {
    /* not JSON: the status says enough */
  }
  const known = ERRORS[response.status];
  if (known) return known;
  return detail ? `The server could not answer: ${detail}` : `The server answered with status ${response.status}.`;
}

function askKey() {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    const done = (ok) => {
      dialog.close();
      resolve(ok);
    };
    $("key-form").onsubmit = (e) => {
      e.preventDefault();
      const value = $("key").value.trim();
      if (value) sessionStorage.setItem(KEY, value);
      done(Boolean(value));
    };
    $("key-cancel").onclick = () => done(false);
    dialog.showModal();
    $("key").focus();
  });
}

function setStatus(text) {
  $("status").textContent = text;
}

// Server-sent events over fetch (EventSource cannot POST): yields {event, data} as they arrive.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

async function ask(question) {
  const c = conversation() ?? (newConversation(), conversation());
  const history = c.turns.flatMap((t) => (t.answer ? [
    { role: "user", content: t.question },
    { role: "assistant", content: t.answer.answer },
  ] : []));
  const turn = { question, answer: null, triage: null };
  c.turns.push(turn);
  if (!c.title) c.title = question.slice(0, 60);
  save();
  renderConversations();
  const view = renderTurn(turn);
  $("thread").append(view.root);
  controller = new AbortController();
  $("stop").hidden = false;
  $("ask").disabled = true;
  setStatus("Searching the sources and drafting an answer…");
  stats.firstTokenMs = null;
  stats.tokenScriptMs = [];
  try {
    const response = await fetch("/v1/answer", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({ question, history, stream: true }),
    });
    if (response.status === 401 && (await askKey())) {
      c.turns.pop();
      view.root.remove();
      save();
      return ask(question);
    }
    if (!response.ok) throw new Error(await errorSentence(response));
    for await (const { event, data } of events(response)) {
      const started = performance.now();
      const body = JSON.parse(data);
      if (event === "triage") {
        turn.triage = body;
        view.showTriage(body);
      } else if (event === "token") {
        if (stats.firstTokenMs === null) stats.firstTokenMs = started - stats.submittedAt;
        view.draft.append(body.text);
        stats.tokenScriptMs.push(performance.now() - started);
      } else if (event === "answer") {
        turn.answer = body;
        save();
        view.showAnswer(body);
        setStatus("Answer ready.");
      } else if (event === "error") {
        throw new Error(`The server could not finish the answer: ${body.detail}`);
      }
    }
    if (!turn.answer) throw new Error("The answer stopped before it was complete. Ask again.");
  } catch (err) {
    if (err.name === "AbortError") {
      view.showError("Stopped. The unfinished draft was not checked, so it is not shown as an answer.");
      setStatus("Stopped.");
    } else {
      view.showError(err instanceof TypeError ? "The server could not be reached. Check your connection."
        : err.message);
      setStatus("");
    }
    c.turns = c.turns.filter((t) => t !== turn || t.answer);
    save();
  } finally {
    controller = null;
    $("stop").hidden = true;
    $("ask").disabled = false;
  }
}

// A sentence's text with its [n] markers as buttons that open the cited passage.
function sentenceNode(text, answer, sentenceIndex) {
  const span = el("span", { class: "sentence" });
  const parts = text.split(/(\[\d+(?:\s*,\s*\d+)*\])/);
  for (const part of parts) {
    const m = part.match(/^\[(\d+(?:\s*,\s*\d+)*)\]$/);
    if (!m) {
      span.append(part);
      continue;
    }
    for (const n of m[1].split(/\s*,\s*/).map(Number)) {
      span.append(el("button", {
        type: "button", class: "marker", "aria-label": `Source ${n}`, "data-marker": String(n),
        onclick: () => openSource(answer, n, text),
      }, `[${n}]`));
    }
  }
  span.dataset.sentence = String(sentenceIndex);
  return span;
}

function words(text) {
  return new Set((text.toLowerCase().match(/[a-z0-9]{3,}/g) || []));
}

function openSource(answer, marker, sentence) {
  const p = answer.citations.find((c) => c.marker === marker) ?? answer.passages[marker - 1];
  if (!p) return;
  $("source").hidden = false;
  $("source-title").textContent = `[${marker}] ${p.title}`;
  $("source-name").textContent = p.source;
  const link = $("source-link");
  link.hidden = !/^https?:\/\//.test(p.url || "");
  if (!link.hidden) link.href = p.url;
  const box = $("source-text");
  box.replaceChildren();
  // the supporting part: the passage sentence sharing most words with the answer sentence, highlighted
  const pieces = p.text.split(/(?<=[.!?])\s+/);
  const want = words(sentence.replace(/\[\d+[^\]]*\]/g, ""));
  let best = -1;
  let bestScore = 0;
  pieces.forEach((s, i) => {
    const score = [...words(s)].filter((w) => want.has(w)).length;
    if (score > bestScore) [best, bestScore] = [i, score];
  });
  pieces.forEach((s, i) => {
    box.append(i === best ? el("mark", { text: s }) : s, i < pieces.length - 1 ? " " : "");
  });
  box.focus();
}

function passageItem(answer, p, marker) {
  return el("li", {}, el("button", {
    type: "button", class: "link", onclick: () => openSource(answer, marker, ""),
  }, `[${marker}] ${p.title}`), el("span", { class: "muted", text: ` · ${p.source}` }));
}

function renderTurn(turn) {
  const root = el("article", { class: "turn" });
  root.append(el("p", { class: "q" }, el("span", { class: "visually-hidden", text: "Question: " }), turn.question));
  const triageBox = el("div", { class: "triage", role: "alert", hidden: "" });
  const draft = el("p", { class: "draft", "aria-label": "Draft, not yet checked" });
  const body = el("div", { class: "answer" });
  root.append(triageBox, draft, body);
  const view = {
    root, draft,
    showTriage(t) {
      triageBox.hidden = false;
      triageBox.replaceChildren(el("strong", { text: "Urgent: " }), t.notice);
    },
    showError(message) {
      draft.remove();
      body.replaceChildren(el("p", { class: "error", role: "alert", text: message }));
    },
    showAnswer(a) {
      draft.remove();
      if (a.triage) view.showTriage(a.triage);
      body.replaceChildren();
      body.append(el("p", { class: `mode mode-${a.answer_mode}`, text: MODES[a.answer_mode] || a.answer_mode }));
      const text = el("p", { class: "verified" });
      if (a.sentences.length) {
        a.sentences.forEach((s, i) => text.append(sentenceNode(s.text, a, i + 1), " "));
      } else {
        text.append(a.answer);
      }
      body.append(text);
      const cited = el("ul", { class: "cited" });
      for (const c of a.citations) cited.append(passageItem(a, c, c.marker));
      if (a.citations.length) body.append(el("h3", { text: "Cited sources" }), cited);
      const others = a.passages.map((p, i) => [p, i + 1]).filter(([, m]) => !a.citations.some((c) => c.marker === m));
      if (others.length) {
        const list = el("ul", {});
        for (const [p, m] of others) list.append(passageItem(a, p, m));
        body.append(el("details", { class: "others" }, el("summary", {
          text: `Other passages shown to the model (${others.length})`,
        }), list));
      }
      if (a.warnings.length) {
        const list = el("ul", {});
        for (const w of a.warnings) list.append(el("li", { text: w }));
        body.append(el("details", { class: "removed" }, el("summary", {
          text: `What verification removed or changed (${a.warnings.length})`,
        }), list));
      }
      if (a.retrieval_query && a.retrieval_query !== turn.question) {
        body.append(el("p", { class: "muted", text: `Searched for: ${a.retrieval_query}` }));
      }
      body.append(el("p", { class: "disclaimer small", text: a.disclaimer }));
      body.append(feedbackBar(a));
    },
  };
  if (turn.triage) view.showTriage(turn.triage);
  if (turn.answer) view.showAnswer(turn.answer);
  return view;
}

function feedbackBar(a) {
  const note = el("span", { class: "muted", role: "status" });
  const comment = el("input", { type: "text", maxlength: "2000", "aria-label": "Comment (optional)",
    placeholder: "Comment (optional)" });
  const send = async (rating) => {
    const response = await fetch("/v1/feedback", {
      method: "POST", headers: headers(),
      body: JSON.stringify({ answer_id: a.id, rating, ...(comment.value.trim() ? { comment: comment.value.trim() } : {}) }),
    }).catch(() => null);
    if (response?.ok) {
      const body = await response.json().catch(() => ({}));
      note.textContent = comment.value.trim() && !body.comment_kept
        ? "Thank you: your rating was stored. This server keeps no written comments, so what you wrote stays private."
        : "Thank you: your feedback was stored.";
    } else {
      note.textContent = response ? await errorSentence(response) : "The server could not be reached.";
    }
  };
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(a.answer);
      note.textContent = "Answer copied.";
    } catch {
      note.textContent = "Copying is not allowed here; select the text instead.";
    }
  };
  return el("div", { class: "feedback" },
    el("button", { type: "button", onclick: copy }, "Copy answer"),
    el("button", { type: "button", onclick: () => send("up") }, "Helpful"),
    el("button", { type: "button", onclick: () => send("down") }, "Not helpful"),
    comment, note);
}

function renderConversations() {
  const list = $("conversation-list");
  list.replaceChildren();
  for (const c of conversations) {
    list.append(el("li", {}, el("button", {
      type: "button", class: "link", "aria-current": c.id === current ? "true" : "false",
      onclick: () => {
        current = c.id;
        renderAll();
      },
    }, c.title || "New conversation")));
  }
}

function renderAll() {
  renderConversations();
  const thread = $("thread");
  thread.replaceChildren();
  for (const t of conversation()?.turns ?? []) thread.append(renderTurn(t).root);
}

$("ask-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("question").value.trim();
  if (!q || controller) return;
  stats.submittedAt = performance.now();
  $("question").value = "";
  ask(q);
});
$("question").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("ask-form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller?.abort());
$("new-conversation").addEventListener("click", newConversation);
$("clear-conversations").addEventListener("click", clearConversations);
$("close-source").addEventListener("click", () => {
  $("source").hidden = true;
});
renderAll();
