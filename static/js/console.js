/* Live output panes of the console.
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

  document.addEventListener("DOMContentLoaded", function () { scan(document); });
  document.addEventListener("htmx:load", function (event) { scan(event.detail.elt); });
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    var elt = event.detail.elt;
    if (elt && elt._socket) elt._socket.close();
  });
})();
