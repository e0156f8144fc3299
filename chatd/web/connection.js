// The page's WebSocket to chatd: text messages, one line each, and a
// reconnect with capped, jittered backoff when the server goes away.

const FIRST_DELAY = 1000;
const MOST_DELAY = 30000;

export function socketAddress(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

export class Connection {
  /**
   * handlers: open(), line(text), closed({reason, retryIn}) where retryIn is
   * the seconds until the next try, or null when it will not try again.
   */
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.socket = null;
    this.retry = false;
    this.delay = FIRST_DELAY;
    this.timer = null;
  }

  /** Connect now; with keepTrying, reconnect whenever the connection is lost. */
  open(keepTrying) {
    this.retry = keepTrying;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.socket) return;
    const socket = new WebSocket(this.url);
    this.socket = socket;
    let opened = false;
    socket.addEventListener("open", () => {
      opened = true;
      this.handlers.open();
    });
    socket.addEventListener("message", (event) => {
      if (typeof event.data === "string") this.handlers.line(event.data);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      let retryIn = null;
      if (this.retry) {
        // Jitter, so that a restarted server is not met by everyone at once.
        const wait = this.delay * (0.75 + Math.random() * 0.5);
        this.delay = Math.min(this.delay * 2, MOST_DELAY);
        this.timer = setTimeout(() => this.open(true), wait);
        retryIn = Math.max(1, Math.round(wait / 1000));
      }
      this.handlers.closed({ opened, retryIn });
    });
  }

  /** The connection did what it was for: the next loss starts the backoff over. */
  succeeded() {
    this.delay = FIRST_DELAY;
  }

  /** Send one line; false if there is no open connection to send it on. */
  send(line) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(line);
    return true;
  }

  /** Close, and try no more. */
  close() {
    this.retry = false;
    clearTimeout(this.timer);
    this.timer = null;
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
  }

  /** Close this connection and try again after the backoff, as if the server had closed it. */
  drop() {
    if (this.socket) this.socket.close();
  }
}
