/* The console's script: live output panes, copy buttons, and keeping focus and ticked boxes across
 * the fragments htmx re-renders every few seconds.
 *
 * An element with data-stream-url is an execution's output pane: it opens the websocket
 * /ws/executions/<id>/?after=<seq> (the console's session cookie authenticates it), appends output
 * chunks as they arrive, and when the status changes or the result arrives asks htmx to re-fetch the
 * result block (and the execution history, where the page has one). A dropped
 * connection reconnects with ?after=<last seq seen>, so nothing is shown twice or lost.
 */
(function () {
  "use strict";

  var PERMANENT_CLOSE = 4400; // the server's 44xx codes (bad request, unauthenticated, not found)

  function socketUrl(path, after) {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + path + "?after=" + after;
  }

  function attach(pane) {
    if (pane.dataset.attached || pane.hasAttribute("data-finished")) return;
    pane.dataset.attached = "1";
    var output = pane.querySelector("[data-output]");
    var state = pane.querySelector("[data-stream-state]");
    var lastSeq = parseInt(pane.dataset.after || "0", 10) || 0;
    var attempts = 0;
    var done = false;
    var socket = null;
    // The status the page was rendered with: a different first status from the server refreshes the result.
    var rendered = pane.querySelector("[data-execution-status]");
    var statusSeen = rendered ? rendered.getAttribute("data-execution-status") : null;
    // Without JavaScript the page says how to see newer output; with it, the socket takes over.
    if (state) state.textContent = "connecting…";

    function setState(text, live) {
      if (!state) return;
      state.textContent = text;
      state.classList.toggle("live", !!live);
    }

    function append(stream, data) {
      var nearBottom = output.scrollHeight - output.scrollTop - output.clientHeight < 40;
      var span = document.createElement("span");
      span.className = "stream-" + stream;
      span.textContent = data;
      output.appendChild(span);
      if (nearBottom) output.scrollTop = output.scrollHeight;
    }

    function changed() {
      var result = pane.querySelector("[data-result]");
      if (result && window.htmx) window.htmx.trigger(result, "execution-changed");
      document.body.dispatchEvent(new CustomEvent("executions-changed", { bubbles: true }));
    }

    function finish(message) {
      done = true;
      setState(message.status ? "finished: " + message.status : "finished", false);
      pane.setAttribute("data-finished", "");
      changed();
    }

    function connect() {
      if (!pane.isConnected) return;
      socket = new WebSocket(socketUrl(pane.dataset.streamUrl, lastSeq));
      pane._socket = socket;
      socket.onopen = function () { attempts = 0; setState("live", true); };
      socket.onmessage = function (event) {
        if (!pane.isConnected) { socket.close(); return; }
        var message = JSON.parse(event.data);
        if (message.type === "output") {
          if (message.seq <= lastSeq) return;
          lastSeq = message.seq;
          append(message.stream, message.data);
        } else if (message.type === "status") {
          var running = message.status === "running";
          setState(running ? "live" : String(message.status), running);
          if (statusSeen && statusSeen !== message.status) changed();
          statusSeen = message.status;
        } else if (message.type === "result") {
          finish(message);
        } else if (message.type === "error") {
          done = true;
          setState(message.message || message.error, false);
        }
      };
      socket.onclose = function (event) {
        if (done || !pane.isConnected || event.code >= PERMANENT_CLOSE) return;
        attempts += 1;
        if (attempts > 8) { setState("disconnected: reload the page", false); return; }
        setState("reconnecting…", false);
        window.setTimeout(connect, Math.min(5000, 200 * Math.pow(2, attempts)));
      };
    }

    connect();
  }

  function scan(root) {
    var scope = root && root.querySelectorAll ? root : document;
    if (scope.matches && scope.matches("[data-stream-url]")) attach(scope);
    Array.prototype.forEach.call(scope.querySelectorAll("[data-stream-url]"), attach);
  }

  /* Copy buttons: <button data-copy="#id" hidden> copies the text of #id. Hidden until this script runs,
   * so a page without JavaScript shows no button that cannot work. */
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    var scratch = document.createElement("textarea");
    scratch.value = text;
    scratch.setAttribute("readonly", "");
    scratch.className = "offscreen";
    document.body.appendChild(scratch);
    scratch.select();
    var copied = document.execCommand("copy");
    scratch.remove();
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function showCopyButtons(root) {
    var scope = root && root.querySelectorAll ? root : document;
    Array.prototype.forEach.call(scope.querySelectorAll("button[data-copy]"), function (button) {
      button.hidden = false;
    });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button[data-copy]") : null;
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    if (!source) return;
    var label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    copyText(source.textContent).then(
      function () { button.textContent = "Copied"; },
      function () { button.textContent = "Select and copy"; }
    );
    window.setTimeout(function () { button.textContent = label; }, 2000);
  });

  /* Polled fragments (dashboard, status panel, tables) are replaced every few seconds. Whatever had the
   * keyboard focus in the old fragment gets it back in the new one, and ticked boxes stay ticked, so a
   * refresh never throws a keyboard user back to the top of the page or loses a selection. An element is
   * found again by its id, else by what it is (tag, name, value, link, text). */
  var FOCUSABLE = "a, button, input, select, textarea, summary, [tabindex]";

  // What an element is, stable across re-renders even when its text changes (a tile's count, a status):
  // its id, else its link, else its form name and value, else its action and text.
  function identity(element) {
    if (element.id) return "#" + element.id;
    var tag = element.tagName;
    if (element.getAttribute("href")) return tag + "|href|" + element.getAttribute("href");
    if (element.getAttribute("name")) {
      return tag + "|name|" + element.getAttribute("name") + "|" + (element.getAttribute("value") || "");
    }
    return tag + "|" + (element.getAttribute("hx-post") || "") + "|" + (element.textContent || "").trim().slice(0, 80);
  }

  // The position among the elements of `root` sharing that identity (the same link can appear twice).
  function locate(root, element) {
    var key = identity(element);
    var same = Array.prototype.filter.call(root.querySelectorAll(FOCUSABLE), function (el) {
      return identity(el) === key;
    });
    return [key, Math.max(0, same.indexOf(element))];
  }

  function findByIdentity(root, place) {
    var key = place[0];
    if (key.charAt(0) === "#") return document.getElementById(key.slice(1));
    var same = Array.prototype.filter.call(root.querySelectorAll(FOCUSABLE), function (el) {
      return identity(el) === key;
    });
    return same[place[1]] || same[0] || null;
  }

  var kept = {}; // target id -> what to restore once its new content has settled

  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (!target || !target.id || !event.detail.shouldSwap) return;
    var active = document.activeElement;
    var boxes = target.querySelectorAll("input[type=checkbox]");
    kept[target.id] = {
      focus: active && active !== document.body && target.contains(active) ? locate(target, active) : null,
      checked: Array.prototype.filter.call(boxes, function (box) { return box.checked !== box.defaultChecked; })
        .map(function (box) { return [locate(target, box), box.checked]; })
    };
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    Object.keys(kept).forEach(function (id) {
      var root = document.getElementById(id);
      if (!root || !(root === event.target || root.contains(event.target))) return;
      var state = kept[id];
      delete kept[id];
      state.checked.forEach(function (entry) {
        var box = findByIdentity(root, entry[0]);
        if (box) box.checked = entry[1];
      });
      var active = document.activeElement;
      if (state.focus && (!active || active === document.body || !active.isConnected)) {
        var again = findByIdentity(root, state.focus);
        if (again) again.focus({ preventScroll: true });
      }
    });
  });

  document.addEventListener("DOMContentLoaded", function () { scan(document); showCopyButtons(document); });
  document.addEventListener("htmx:load", function (event) { scan(event.detail.elt); showCopyButtons(event.detail.elt); });
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    var elt = event.detail.elt;
    if (elt && elt._socket) elt._socket.close();
  });
})();
