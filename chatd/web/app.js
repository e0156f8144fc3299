// chatd's web page: join with a nickname, then chat over the line protocol
// on chatd's own WebSocket, as chatd-client does in a terminal.

import { Connection, socketAddress } from "./connection.js";
import { HELP, interpret, nickProblem, parse, same } from "./protocol.js";
import { describe, entry } from "./render.js";

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  join: $("join"),
  joinForm: $("join-form"),
  nick: $("nick"),
  joinButton: $("join-button"),
  nickError: $("nick-error"),
  chat: $("chat"),
  log: $("log"),
  newMessages: $("new-messages"),
  users: $("users"),
  userCount: $("user-count"),
  sendForm: $("send-form"),
  message: $("message"),
};

// Entries kept in the conversation; older ones go, so a long day stays light.
const MOST_ENTRIES = 2000;
// Pixels from the bottom within which the reader counts as following along.
const FOLLOWING = 32;
const TITLE = document.title;
// Refusals of a nickname that leave the connection open for another try.
const NICK_REFUSALS = new Set(["bad-name", "name-taken", "bad-arguments"]);

const chat = {
  // "join": the form; "chat": joined; "rejoin": joined before, connection lost.
  phase: "join",
  me: null,
  asked: null, // the nickname asked for, until the server answers
  users: [],
  unread: 0,
  unseen: 0,
  history: [],
  recalled: null,
};

const connection = new Connection(socketAddress(window.location), {
  open: onOpen,
  line: onLine,
  closed: onClosed,
});

// Connection state, always shown

function setState(kind, text) {
  ui.state.dataset.state = kind;
  ui.state.textContent = text;
}

// Joining

ui.joinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const nick = ui.nick.value.trim();
  const problem = nickProblem(nick);
  if (problem) {
    refuseNick(problem);
    return;
  }
  askNotifications();
  chat.asked = nick;
  ui.nickError.textContent = "";
  ui.nick.removeAttribute("aria-invalid");
  ui.joinButton.disabled = true;
  if (!connection.send(`!nick ${nick}`)) {
    setState("connecting", `Connecting to ${window.location.host}…`);
    connection.open(false);
  }
});

function refuseNick(text) {
  ui.nickError.textContent = text;
  ui.nick.setAttribute("aria-invalid", "true");
  ui.joinButton.disabled = false;
  ui.nick.focus();
  ui.nick.select();
}

function onOpen() {
  const nick = chat.phase === "join" ? chat.asked : chat.me;
  if (nick == null) return;
  chat.asked = nick;
  setState("connecting", `Connected; joining as ${nick}…`);
  connection.send(`!nick ${nick}`);
}

function joined() {
  const first = chat.phase === "join";
  chat.me = chat.asked;
  chat.asked = null;
  chat.phase = "chat";
  connection.retry = true;
  connection.succeeded();
  setState("connected", `Connected as ${chat.me}`);
  if (first) {
    ui.join.hidden = true;
    ui.chat.hidden = false;
    ui.joinButton.disabled = false;
    show({ kind: "note", args: [`you are ${chat.me}; /help lists the commands`] });
    ui.message.focus();
  } else {
    show({ kind: "note", args: [`reconnected as ${chat.me}`] });
  }
}

function onClosed({ retryIn }) {
  if (chat.phase === "join") {
    if (chat.asked != null) {
      refuseNick(`Cannot reach the chat server at ${window.location.host}. Try again.`);
      chat.asked = null;
    }
    setState("disconnected", "Not connected: choose a nickname to join");
    return;
  }
  if (chat.phase === "chat") {
    chat.phase = "rejoin";
    show({ kind: "error", args: ["", "lost the connection to the server"] });
    ui.users.classList.add("stale");
  }
  setState("disconnected", `Disconnected: reconnecting in ${retryIn} s…`);
}

// What the server says

function onLine(line) {
  const event = parse(line);
  if (chat.asked != null) {
    if (event.kind === "users") {
      joined();
    } else if (event.kind === "error" && NICK_REFUSALS.has(event.args[0])) {
      nickRefused(event.args[0], event.args[1]);
      return;
    } else if (event.kind === "error" && chat.phase === "join") {
      // Server full, or another reason it closes: said next to the field.
      refuseNick(event.args[1]);
      chat.asked = null;
      return;
    }
  }
  follow(event);
  if (chat.phase !== "join") show(event);
}

function nickRefused(code, text) {
  if (chat.phase === "join") {
    chat.asked = null;
    refuseNick(text);
    return;
  }
  // Taking the nickname back after a reconnect: someone holds it (perhaps the
  // old connection, not yet gone); try again after the backoff.
  setState("disconnected", `${chat.me} is in use: trying again soon…`);
  show({ kind: "error", args: [code, `${text}; trying again`] });
  connection.drop();
}

/** Keep the user list, and the user's own nick, in step with the server. */
function follow(event) {
  const [a, b] = event.args;
  switch (event.kind) {
    case "users":
      setUsers(event.args);
      break;
    case "joined":
      if (!chat.users.some((u) => same(u, a))) setUsers([...chat.users, a]);
      break;
    case "left":
      setUsers(chat.users.filter((u) => !same(u, a)));
      break;
    case "changenickname":
      if (same(a, chat.me)) chat.me = b;
      setUsers(chat.users.map((u) => (same(u, a) ? b : u)));
      if (same(b, chat.me)) setState("connected", `Connected as ${chat.me}`);
      break;
    case "msg":
      attention();
      break;
    case "privmsg":
      attention();
      if (away()) notify(`Private message from ${a}`, b);
      break;
    case "poke":
      attention();
      if (same(b, chat.me)) notify(`${a} pokes you!`, "on chatd");
      break;
  }
}

// The list of who is online

function setUsers(names) {
  chat.users = names;
  ui.users.classList.remove("stale");
  ui.userCount.textContent = `(${names.length})`;
  const items = names.map((name) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "user";
    button.textContent = name;
    button.title = `Send ${name} a private message`;
    if (same(name, chat.me)) {
      button.classList.add("me");
      button.setAttribute("aria-description", "you");
    }
    button.addEventListener("click", () => startPrivate(name));
    item.append(button);
    return item;
  });
  ui.users.replaceChildren(...items);
}

function startPrivate(name) {
  ui.message.value = `/msg ${name} `;
  ui.message.focus();
  const end = ui.message.value.length;
  ui.message.setSelectionRange(end, end);
}

// The conversation

function atBottom() {
  const log = ui.log;
  return log.scrollHeight - log.scrollTop - log.clientHeight <= FOLLOWING;
}

function show(event) {
  const following = atBottom();
  const [kind, parts] = describe(event, chat.me);
  ui.log.append(entry(kind, parts));
  if (following) {
    while (ui.log.childElementCount > MOST_ENTRIES) ui.log.firstElementChild.remove();
    ui.log.scrollTop = ui.log.scrollHeight;
  } else {
    chat.unseen += 1;
    ui.newMessages.textContent = chat.unseen === 1 ? "1 new message" : `${chat.unseen} new messages`;
    ui.newMessages.hidden = false;
  }
}

function toBottom() {
  ui.log.scrollTop = ui.log.scrollHeight;
  chat.unseen = 0;
  ui.newMessages.hidden = true;
}

ui.log.addEventListener("scroll", () => {
  if (!ui.newMessages.hidden && atBottom()) {
    chat.unseen = 0;
    ui.newMessages.hidden = true;
  }
});

ui.newMessages.addEventListener("click", () => {
  toBottom();
  ui.message.focus();
});

// The message field

ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.message.value;
  const meant = interpret(text);
  if (meant.local === "help") {
    for (const [usage, what] of HELP) show({ kind: "note", args: [`${usage.padEnd(16)} ${what}`] });
    show({ kind: "note", args: ["anything else is said to everyone; click a name to message it"] });
  } else if (meant.local === "quit") {
    leave();
    return;
  }
  if (meant.send) {
    if (chat.phase !== "chat" || !connection.send(meant.send)) {
      show({ kind: "error", args: ["", "not connected: wait for the reconnect"] });
      return;
    }
  }
  if (meant.show) show(meant.show);
  if (text.trim()) chat.history.push(text);
  chat.recalled = null;
  ui.message.value = "";
  toBottom();
});

// Up and Down walk through what was sent, as in a terminal.
ui.message.addEventListener("keydown", (event) => {
  if (event.key !== "ArrowUp" && event.key !== "ArrowDown") return;
  if (!chat.history.length) return;
  event.preventDefault();
  let at = chat.recalled ?? chat.history.length;
  at = event.key === "ArrowUp" ? Math.max(0, at - 1) : at + 1;
  if (at >= chat.history.length) {
    chat.recalled = null;
    ui.message.value = "";
  } else {
    chat.recalled = at;
    ui.message.value = chat.history[at];
  }
});

function leave() {
  connection.send("!quit");
  connection.close();
  chat.phase = "join";
  chat.asked = null;
  chat.me = null;
  ui.message.value = "";
  ui.log.replaceChildren();
  setUsers([]);
  ui.chat.hidden = true;
  ui.join.hidden = false;
  setState("idle", "Left the chat: choose a nickname to join again");
  ui.nick.focus();
}

// Unread messages in the title, and desktop notifications

function away() {
  return document.hidden || !document.hasFocus();
}

function attention() {
  if (!away()) return;
  chat.unread += 1;
  document.title = `(${chat.unread}) ${TITLE}`;
}

function seen() {
  if (away()) return;
  chat.unread = 0;
  document.title = TITLE;
}

document.addEventListener("visibilitychange", seen);
window.addEventListener("focus", seen);

function askNotifications() {
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().catch(() => {});
  }
}

function notify(title, body) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const note = new Notification(title, { body, tag: "chatd" });
  note.addEventListener("click", () => {
    window.focus();
    note.close();
  });
}

setState("idle", "Not connected: choose a nickname to join");
