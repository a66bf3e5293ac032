// Rosey dashboard: live updates over Server-Sent Events, and the Reload/Restart buttons.
// Without this script the page refreshes itself (<noscript> meta refresh) and the buttons are inert.
"use strict";
(function () {
  var TOKEN_KEY = "rosey.dashboard.token";
  var shown = new Map(); // plugin name -> the card HTML last put in the page
  var busy = new Set(); // "name/action" of requests in flight
  var lastHeader = null;
  var lastTimeline = null;
  var source = null;

  function $(id) { return document.getElementById(id); }

  function setLive(state, text) {
    var live = $("live");
    // Rewriting the same text would make some screen readers announce it at every event.
    if (!live || live.dataset.state === state) return;
    live.dataset.state = state;
    live.textContent = text;
  }

  function elementOf(html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    return t.content.firstElementChild;
  }

  function key(name, action) { return name + "/" + action; }

  // Replaces a card, keeping the keyboard focus on the same button and busy buttons disabled.
  function freshCard(old, name, html) {
    var card = elementOf(html);
    var focused = old && old.contains(document.activeElement) ? document.activeElement : null;
    card.querySelectorAll("button[data-action]").forEach(function (b) {
      if (busy.has(key(name, b.dataset.action))) b.disabled = true;
    });
    if (old) old.replaceWith(card);
    if (focused && focused.dataset.action) {
      var same = Array.prototype.find.call(card.querySelectorAll("button[data-action]"), function (b) {
        return b.dataset.action === focused.dataset.action;
      });
      if (same) same.focus();
    }
    return card;
  }

  function applyCards(cards) {
    var box = $("cards");
    if (!box) return;
    var present = new Map();
    Array.prototype.forEach.call(box.children, function (el) {
      if (el.dataset.plugin !== undefined) present.set(el.dataset.plugin, el);
    });
    var previous = null;
    cards.forEach(function (c) {
      var el = present.get(c.name);
      present.delete(c.name);
      if (!el || shown.get(c.name) !== c.html) {
        el = freshCard(el, c.name, c.html);
        shown.set(c.name, c.html);
      }
      // The server sends the cards sorted by name; follow its order.
      var wanted = previous ? previous.nextElementSibling : box.firstElementChild;
      if (wanted !== el) box.insertBefore(el, wanted);
      previous = el;
    });
    present.forEach(function (el, name) {
      el.remove();
      shown.delete(name);
    });
    var empty = $("no-plugins");
    if (empty) empty.hidden = cards.length > 0;
  }

  function apply(f) {
    if (f.header !== lastHeader && $("header")) {
      $("header").innerHTML = f.header;
      lastHeader = f.header;
    }
    if (f.timeline !== lastTimeline && $("timeline")) {
      $("timeline").innerHTML = f.timeline;
      lastTimeline = f.timeline;
    }
    applyCards(f.cards || []);
    var updated = $("updated");
    var when = new Date(f.timestamp * 1000);
    if (updated && !isNaN(when)) {
      var iso = when.toISOString();
      updated.dateTime = iso.slice(0, 19) + "Z";
      updated.textContent = iso.slice(11, 19);
    }
  }

  function connect() {
    if (!window.EventSource) return;
    source = new EventSource("/api/stream");
    source.addEventListener("open", function () { setLive("live", "Live"); });
    source.addEventListener("overview", function (e) {
      try {
        apply(JSON.parse(e.data));
        setLive("live", "Live");
      } catch (err) {
        console.error("dashboard: bad overview event", err);
      }
    });
    source.addEventListener("error", function () {
      setLive("reconnecting", "Reconnecting…");
      // EventSource retries by itself unless the server refused the stream; then retry ourselves.
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(connect, 5000);
      }
    });
  }

  function say(text) {
    var status = $("action-status");
    if (status) status.textContent = text;
  }

  function act(button) {
    var name = button.dataset.plugin;
    var action = button.dataset.action;
    var input = $("token");
    var token = input ? input.value.trim() : "";
    if (!token) {
      say("Enter the dashboard token first.");
      if (input) input.focus();
      return;
    }
    if (action === "restart" && !window.confirm("Restart " + name + "?")) return;
    busy.add(key(name, action));
    button.disabled = true;
    say(name + ": " + action + " requested…");
    fetch("/api/plugin/" + encodeURIComponent(name) + "/" + action, {
      method: "POST",
      headers: { Authorization: "Bearer " + token },
      credentials: "same-origin",
    })
      .then(function (response) {
        return response.json().then(
          function (body) { return { ok: response.ok, body: body || {} }; },
          function () { return { ok: response.ok, body: { error: response.status + " " + response.statusText } }; }
        );
      })
      .then(function (answer) {
        var b = answer.body;
        if (b.error || !answer.ok) say(name + ": " + action + " failed: " + (b.error || "refused"));
        else say(name + ": " + action + ": " + (b.outcome || "done"));
      })
      .catch(function (err) { say(name + ": " + action + " failed: " + err.message); })
      .finally(function () {
        busy.delete(key(name, action));
        // The card may have been replaced meanwhile: enable the button that is there now.
        document.querySelectorAll("button[data-action]").forEach(function (b) {
          if (b.dataset.plugin === name && b.dataset.action === action) b.disabled = false;
        });
      });
  }

  function start() {
    var input = $("token");
    if (input) {
      try {
        input.value = sessionStorage.getItem(TOKEN_KEY) || "";
        input.addEventListener("input", function () { sessionStorage.setItem(TOKEN_KEY, input.value); });
      } catch (err) {
        // Storage can be disabled; the token then lasts as long as the page.
      }
    }
    document.addEventListener("click", function (e) {
      var button = e.target.closest && e.target.closest("button[data-action]");
      if (button && !button.disabled) act(button);
    });
    connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
