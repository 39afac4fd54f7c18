// The page: log on with the form, watch one queue, list what arrives.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  for (const field of ["server", "prefix", "user", "queue"]) {
    if (params.has(field)) $(field).value = params.get(field);
  }
  let client = null;
  let size = 0;

  function status(text, state) {
    $("status").textContent = text;
    $("status").dataset.state = state;
  }

  function show(event, text) {
    const item = document.createElement("li");
    item.dataset.event = event;
    item.textContent = `${event} ${text}`;
    $("events").append(item);
  }

  function queueChanged(body) {
    size += (body.added || []).length - (body.removed || []).length;
    $("queue-size").textContent = String(size);
    const ids = [...(body.added || []), ...(body.changed || [])].map((i) => i.id);
    show("QueueChanged", `${body.queue} +${(body.added || []).length} ` +
      `~${(body.changed || []).length} -${(body.removed || []).length} ${ids.join(" ")}`);
  }

  $("logon").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("logon-button").disabled = true;
    const url = Smbridge.sessionUrl(location, $("server").value, $("prefix").value);
    status(`connecting to ${url}`, "connecting");
    try {
      client = await new Smbridge.Client(url).open();
      client.closed.then((e) => status(`closed (${e.code})`, e.code === 1000 ? "closed" : "error"));
      client.onNotification((frame) => {
        if (frame.name === "QueueChanged") queueChanged(frame.body);
        else show(frame.name, JSON.stringify(frame.body));
      });
      const reply = await client.logon($("user").value, $("password").value);
      $("password").value = "";
      $("session").textContent = reply.sessionId;
      status("logged on", "open");
      const snapshot = await client.watchQueue($("queue").value);
      size = (snapshot.interactions || []).length;
      $("queue-name").textContent = snapshot.queue;
      $("queue-size").textContent = String(size);
      show("WatchQueue", `${snapshot.queue}: ${size} interactions`);
      $("logoff-button").disabled = false;
    } catch (error) {
      status(String(error.message || error), "error");
      $("logon-button").disabled = false;
    }
  });

  $("logoff-button").addEventListener("click", async () => {
    $("logoff-button").disabled = true;
    if (client) await client.logoff();
    $("session").textContent = "-";
    $("logon-button").disabled = false;
  });
})();
