// PyChat's ! line protocol as the page speaks it: server lines parsed,
// and what the user types turned into commands, as chatd-client does.

// How many arguments each kind of server line has; the last takes the rest.
const ARITY = {
  msg: 2, privmsg: 2, error: 2, help: 2, poke: 2,
  joined: 1, left: 1, changenickname: 2,
};

/** One server line as {kind, args}; a line of no known kind has kind "" and itself as argument. */
export function parse(line) {
  const space = line.indexOf(" ");
  const word = space < 0 ? line : line.slice(0, space);
  const rest = space < 0 ? "" : line.slice(space + 1);
  const kind = word.startsWith("!") ? word.slice(1) : "";
  if (kind === "users") {
    return { kind, args: rest.split(" ").filter(Boolean).slice(1) };
  }
  const arity = ARITY[kind];
  if (!arity) return { kind: "", args: [line] };
  const args = [];
  let left = rest;
  for (let i = 0; i < arity - 1; i++) {
    const at = left.indexOf(" ");
    if (at < 0) break;
    args.push(left.slice(0, at));
    left = left.slice(at + 1);
  }
  args.push(left);
  if (args.length !== arity || args.some((a) => !a)) return { kind: "", args: [line] };
  return { kind, args };
}

/** Names compared as chatd compares them: without regard to case. */
export function fold(name) {
  return name.toLowerCase();
}

export function same(a, b) {
  return a != null && b != null && fold(a) === fold(b);
}

// The commands of the message field, as /help lists them (chatd-client's).
export const HELP = [
  ["/msg NAME TEXT", "send TEXT to NAME alone"],
  ["/poke NAME", "poke NAME, for everyone to see"],
  ["/nick NEW", "change your nick"],
  ["/users", "list who is online"],
  ["/help", "show this help"],
  ["/quit", "leave the chat"],
];
const COMMANDS = HELP.map(([usage]) => usage.split(" ")[0]);

function usage(command) {
  return HELP.find(([u]) => u.split(" ")[0] === command)[0];
}

/**
 * What one entry of the message field means:
 * {send: line to the server, show: {kind, args} to show, local: what the page does itself}.
 */
export function interpret(input) {
  // One entry is one line: a line end inside it would start another command.
  const text = input.replace(/[\r\n]+/g, " ").trim();
  if (!text) return {};
  if (text.startsWith("//")) return say(text.slice(1));
  if (!text.startsWith("/")) return say(text);
  const space = text.indexOf(" ");
  const name = (space < 0 ? text : text.slice(0, space)).toLowerCase();
  const rest = space < 0 ? "" : text.slice(space + 1).trim();
  if (!COMMANDS.includes(name)) {
    return { show: { kind: "error", args: ["", `no command ${name}; /help lists them`] } };
  }
  const words = rest.split(/\s+/).filter(Boolean);
  switch (name) {
    case "/msg": {
      const at = rest.search(/\s/);
      const to = at < 0 ? rest : rest.slice(0, at);
      const said = at < 0 ? "" : rest.slice(at + 1).trim();
      if (!to || !said) return usageError(name);
      return { send: `!sendto ${to} ${said}`, show: { kind: "whisperedto", args: [to, said] } };
    }
    case "/poke":
      return words.length === 1 ? { send: `!poke ${words[0]}` } : usageError(name);
    case "/nick":
      return words.length === 1 ? { send: `!changenickname ${words[0]}` } : usageError(name);
    case "/users":
      return { send: "!users" };
    case "/help":
      return { local: "help" };
    case "/quit":
      return { local: "quit" };
  }
  return {};
}

function say(text) {
  return { send: `!sendmsg ${text}`, show: { kind: "said", args: [text] } };
}

function usageError(command) {
  return { show: { kind: "error", args: ["", `usage: ${usage(command)}`] } };
}

/** Why a nickname cannot be sent as it is, or null if it can. */
export function nickProblem(nick) {
  if (!nick) return "Enter a nickname.";
  if (/\s/.test(nick)) return "A nickname cannot contain spaces.";
  return null;
}
