// How the conversation shows things: each entry built from text nodes,
// never from HTML, in the words chatd-client uses.

import { fold, same } from "./protocol.js";

// A server that is not chatd might pass on control characters; show them as U+FFFD.
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

export function clean(text) {
  return String(text).replace(CONTROL, "\ufffd");
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = clean(text);
  return node;
}

// Nicks keep one colour each, the same for everyone.
function colour(name) {
  let h = 0;
  for (const c of fold(name)) h = (h * 31 + c.codePointAt(0)) >>> 0;
  return h % 6;
}

export function nick(name, me) {
  const node = el("span", `nick nick-${colour(name)}`, name);
  if (same(name, me)) node.classList.add("me");
  return node;
}

function pad(n) {
  return String(n).padStart(2, "0");
}

/** One entry of the conversation: the time of day, then C{parts} (strings or nodes). */
export function entry(kind, parts, now = new Date()) {
  const item = el("li", `entry ${kind}`);
  const time = el("time", "time", `${pad(now.getHours())}:${pad(now.getMinutes())}`);
  time.dateTime = now.toISOString();
  item.append(time, " ");
  const body = el("span", "body");
  for (const part of parts) body.append(typeof part === "string" ? clean(part) : part);
  item.append(body);
  return item;
}

/** The parts and kind of entry for one event, as chatd-client shows it. */
export function describe(event, me) {
  const [a, b] = event.args;
  switch (event.kind) {
    case "msg": {
      const mentioned = me && !same(a, me) && fold(b).includes(fold(me));
      return ["said" + (mentioned ? " mention" : ""), ["<", nick(a, me), "> ", el("span", "text", b)]];
    }
    case "said":
      return ["said own", ["<", nick(me, me), "> ", el("span", "text", a)]];
    case "privmsg":
      return ["private", ["*", nick(a, me), "* ", el("span", "text", b)]];
    case "whisperedto":
      return ["private own", ["-> *", nick(a, me), "* ", el("span", "text", b)]];
    case "poke":
      return ["poke", ["* ", nick(a, me), " pokes ", same(b, me) ? "you" : nick(b, me), "!"]];
    case "joined":
      return ["info", ["--> ", nick(a, me), " joined"]];
    case "left":
      return ["info", ["<-- ", nick(a, me), " left"]];
    case "changenickname":
      if (same(b, me)) return ["info", ["-- you are now known as ", nick(b, me)]];
      return ["info", ["-- ", nick(a, me), " is now known as ", nick(b, me)]];
    case "users": {
      const parts = [`-- ${event.args.length} online: `];
      event.args.forEach((name, i) => {
        if (i) parts.push(", ");
        parts.push(nick(name, me));
      });
      return ["info", parts];
    }
    case "error":
      return ["error", [`!! ${b}`]];
    case "help":
      return ["info", [`-- ${a} ${b}`]];
    case "note":
      return ["info", [`-- ${a}`]];
    default:
      return ["info", [`-- ${a}`]];
  }
}
