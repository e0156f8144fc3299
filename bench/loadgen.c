/*
 * loadgen: the load generator of chatd's benchmark; bench/run.py builds it
 * with gcc and runs it. One process, one thread, epoll and non-blocking
 * sockets, so that the generator is not the bottleneck: it measures its own
 * CPU time and prints it beside the server's.
 *
 *   loadgen fanout  PORT SERVER_PID TIMEOUT CLIENTS SENDERS MESSAGES WINDOW
 *   loadgen mailbox PORT SERVER_PID TIMEOUT CLIENTS ROUNDS
 *   loadgen idle    PORT SERVER_PID TIMEOUT CLIENTS
 *   loadgen join    PORT SERVER_PID TIMEOUT CLIENTS
 *   loadgen cross   PORT SERVER_PID TIMEOUT LINE SENDERS BINARY MESSAGES WINDOW
 *   loadgen ws-fanout, ws-idle ...: the same over chatd's WebSocket (PORT its
 *     web port): each client upgrades GET /ws, waits for the 101, then sends
 *     each line (or each binary command) as one masked WebSocket message and
 *     reads the server's messages, a line each (or binary frames).
 *
 * Each prints one JSON object on one line. A message text carries its
 * sender's sequence number and the CLOCK_MONOTONIC time it was sent, so
 * every receiver measures end-to-end latency and checks order and loss.
 * Every wait is bounded by TIMEOUT seconds from the start.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum kind { LINE, BINARY };

typedef struct conn {
    int fd, idx;
    enum kind kind;
    char *in, *out;          /* received and not parsed; to send and not sent */
    size_t in_len, in_cap, out_len, out_cap;
    int want_out;            /* EPOLLOUT is registered */
    int replied;             /* the answer it waits for has come */
    long msgs;               /* messages received */
    long *last_seq;          /* per sender, the last sequence number seen */
    /* line clients */
    long users_seen;         /* N - 1 from the !users reply */
    long joined;             /* !joined lines */
    long help;               /* !help lines */
    /* binary clients */
    int expect;              /* frames still to come in the current reply */
    int in_receive;          /* the current reply answers a receive */
    int field;               /* in a receive: 0 the sender frame, 1 the text */
    int from;                /* the sender of the message being read */
    int batch;               /* messages in the current receive's reply */
    long commands, rounds;
    double t_cmd, poll_at;
    /* WebSocket clients */
    int ws_open;             /* the server's 101 has come */
    void (*ws_hello)(struct conn *);  /* said once it has */
} conn;

static int use_ws;           /* every client speaks over WebSocket */

static int ep, port, server_pid, nsenders;
/* Several nodes: the senders connect here (LOADGEN_SENDER_PORT), the rest to port. */
static int sender_port;
static double deadline, t_start;
static double t_read;            /* when the data being parsed was read */
static conn *conns;
static int nconns;
static long errors;
static char errmsg[200];

static void (*on_line)(conn *, char *, size_t);
static void (*on_frame)(conn *, char *, size_t);
static void (*on_tick)(void);

/* Latency histogram: 10 us buckets up to 20 s. */
#define BUCKET_US 10
#define NBUCKETS 2000000
static uint32_t hist[NBUCKETS];
static long hist_n;
static double lat_max;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_self(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The system part of the last cpu_server() reading. */
static double server_sys_s;

/* The server's user + system CPU seconds, from /proc/PID/stat. */
static double cpu_server(void) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        ut = st = 0;
    server_sys_s = (double)st / sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

/* A "Vm...:" figure of the server, in kB, from /proc/PID/status. */
static long server_kb(const char *key) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", server_pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen) && line[klen] == ':') { v = atol(line + klen + 1); break; }
    fclose(f);
    return v;
}

static void die(const char *fmt, ...) {
    char buf[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    printf("{\"error\": \"%s\"}\n", buf);
    exit(1);
}

static void note_error(const char *fmt, ...) {
    if (!errors) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errmsg, sizeof errmsg, fmt, ap);
        va_end(ap);
        for (char *c = errmsg; *c; c++)
            if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = '?';
    }
    errors++;
}

static void record(double seconds) {
    long b = (long)(seconds * 1e6 / BUCKET_US);
    if (b < 0) b = 0;
    if (b >= NBUCKETS) b = NBUCKETS - 1;
    hist[b]++;
    hist_n++;
    if (seconds > lat_max) lat_max = seconds;
}

/* The p-quantile of the recorded latencies, in ms. */
static double percentile(double p) {
    long want = (long)(p * hist_n), seen = 0;
    if (want >= hist_n) want = hist_n - 1;
    for (long b = 0; b < NBUCKETS; b++) {
        seen += hist[b];
        if (seen > want) return (b + 0.5) * BUCKET_US / 1000.0;
    }
    return 0;
}

static void grow(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    if (!(*buf = realloc(*buf, c))) die("out of memory");
    *cap = c;
}

static void watch(conn *c, int out) {
    struct epoll_event ev = {.events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = out;
}

static void flush_out(conn *c) {
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t n = send(c->fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            die("send to client %d: %s", c->idx, strerror(errno));
        }
        off += n;
    }
    memmove(c->out, c->out + off, c->out_len - off);
    c->out_len -= off;
    if (!!c->out_len != c->want_out) watch(c, !!c->out_len);
}

static void put(conn *c, const void *data, size_t len) {
    grow(&c->out, &c->out_cap, c->out_len + len);
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

/* One client-to-server WebSocket message: FIN, OPCODE, masked with the key
   0 (a valid key that leaves the payload as it is, so masking costs nothing). */
static void put_ws(conn *c, int opcode, const void *data, size_t len) {
    unsigned char head[14];
    size_t h = 0;
    head[h++] = 0x80 | opcode;
    if (len < 126) {
        head[h++] = 0x80 | len;
    } else if (len < 65536) {
        head[h++] = 0x80 | 126;
        head[h++] = len >> 8;
        head[h++] = len & 0xff;
    } else {
        head[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) head[h++] = (uint64_t)len >> (8 * i);
    }
    memset(head + h, 0, 4);
    h += 4;
    put(c, head, h);
    put(c, data, len);
}

/* One line, one send(), as an interactive client sends it. */
static void send_line(conn *c, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (use_ws) put_ws(c, 1, buf, n > 0 && buf[n - 1] == '\n' ? n - 1 : n);
    else put(c, buf, n);
    flush_out(c);
}

/* One binary command: its frames back to back in one send(). */
static void send_command(conn *c, int expect, int nframes, ...) {
    char buf[512];
    size_t n = 0;
    va_list ap;
    va_start(ap, nframes);
    for (int i = 0; i < nframes; i++) {
        const char *s = va_arg(ap, const char *);
        uint32_t len = strlen(s);
        if (n + 4 + len > sizeof buf) die("command too long");
        memcpy(buf + n, &len, 4);
        memcpy(buf + n + 4, s, len);
        n += 4 + len;
    }
    va_end(ap);
    if (use_ws) put_ws(c, 2, buf, n);
    else put(c, buf, n);
    c->expect = expect;
    c->commands++;
    c->t_cmd = now();
    flush_out(c);
}

static void binary_frames(conn *c, char *data, size_t len) {
    size_t pos = 0;
    while (len - pos >= 4) {
        uint32_t n;
        memcpy(&n, data + pos, 4);
        if (len - pos - 4 < n) {
            note_error("client %d: a reply split across messages", c->idx);
            return;
        }
        char save = data[pos + 4 + n];
        data[pos + 4 + n] = 0;
        on_frame(c, data + pos + 4, n);
        data[pos + 4 + n] = save;
        pos += 4 + n;
    }
}

/* The server's 101, then its messages: unmasked, whole (FIN) frames. */
static size_t read_ws(conn *c) {
    size_t pos = 0;
    if (!c->ws_open) {
        char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
        if (!end) return 0;
        if (strncmp(c->in, "HTTP/1.1 101", 12)) die("client %d: no upgrade: %.60s", c->idx, c->in);
        c->ws_open = 1;
        pos = end + 4 - c->in;
        c->ws_hello(c);
    }
    while (c->in_len - pos >= 2) {
        unsigned char *h = (unsigned char *)c->in + pos;
        int opcode = h[0] & 0x0f;
        uint64_t len = h[1] & 0x7f;
        size_t head = 2;
        if (len == 126) {
            if (c->in_len - pos < 4) break;
            len = (h[2] << 8) | h[3];
            head = 4;
        } else if (len == 127) {
            if (c->in_len - pos < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | h[2 + i];
            head = 10;
        }
        if (c->in_len - pos - head < len) break;
        char *data = c->in + pos + head;
        /* read_conn's buffer always has room for this terminating NUL. */
        char save = data[len];
        data[len] = 0;
        if (opcode == 1) on_line(c, data, len);
        else if (opcode == 2) binary_frames(c, data, len);
        else if (opcode == 8) note_error("client %d: the server closed the WebSocket", c->idx);
        data[len] = save;
        pos += head + len;
    }
    return pos;
}

static void read_conn(conn *c) {
    grow(&c->in, &c->in_cap, c->in_len + 65536);
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        note_error("the server closed client %d", c->idx);
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        return;
    }
    if (n < 0) return;
    c->in_len += n;
    t_read = now();              /* once a read, not once a line: it is cheaper */
    size_t pos = 0;
    if (use_ws) {
        pos = read_ws(c);
    } else if (c->kind == LINE) {
        char *nl;
        while ((nl = memchr(c->in + pos, '\n', c->in_len - pos))) {
            *nl = 0;
            on_line(c, c->in + pos, nl - (c->in + pos));
            pos = nl + 1 - c->in;
        }
    } else {
        while (c->in_len - pos >= 4) {
            uint32_t len;
            memcpy(&len, c->in + pos, 4);
            if (c->in_len - pos - 4 < len) break;
            char save = c->in[pos + 4 + len];
            c->in[pos + 4 + len] = 0;
            on_frame(c, c->in + pos + 4, len);
            c->in[pos + 4 + len] = save;
            pos += 4 + len;
        }
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
}

/* Run the event loop until done() or the deadline. */
static void loop(int (*done)(void)) {
    struct epoll_event evs[1024];
    while (!done()) {
        double t = now();
        if (t >= deadline) return;
        int timeout = on_tick ? 1 : (int)((deadline - t) * 1000) + 1;
        int n = epoll_wait(ep, evs, 1024, timeout > 100 ? 100 : timeout);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (evs[i].events & EPOLLOUT) flush_out(c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_conn(c);
        }
        if (on_tick) on_tick();
    }
}

static conn *wait_lo, *wait_hi;
static int all_replied(void) {
    for (conn *c = wait_lo; c < wait_hi; c++)
        if (!c->replied) return 0;
    return 1;
}

/* Open clients FIRST..FIRST+N-1 in chunks: each chunk says hello() and waits
   for every answer before the next connects, so the listen queue never
   overflows. */
static void open_clients(int first, int n, enum kind kind, void (*hello)(conn *)) {
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    const int chunk = 250;
    for (int lo = first; lo < first + n; lo += chunk) {
        int hi = lo + chunk < first + n ? lo + chunk : first + n;
        for (int i = lo; i < hi; i++) {
            conn *c = &conns[i];
            c->idx = i;
            c->kind = kind;
            sa.sin_port = htons(sender_port && i < nsenders ? sender_port : port);
            if ((c->fd = socket(AF_INET, SOCK_STREAM, 0)) < 0)
                die("socket: %s (ulimit -n)", strerror(errno));
            if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                die("connect: %s", strerror(errno));
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
            if (use_ws) {
                /* Say hello once the upgrade is answered, as RFC 6455 4.1 requires. */
                char req[256];
                int n = snprintf(req, sizeof req,
                    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n", port);
                c->ws_hello = hello;
                put(c, req, n);
                flush_out(c);
            } else {
                hello(c);
            }
        }
        wait_lo = &conns[lo];
        wait_hi = &conns[hi];
        loop(all_replied);
        if (!all_replied()) die("timed out opening client %d of %d", lo, first + n);
    }
}

static void make_clients(int n) {
    nconns = n;
    if (!(conns = calloc(n, sizeof(conn)))) die("out of memory");
}

/* Messages: "!sendmsg SEQ NS PAD" with NS the send time in ns since start. */
static long *sent, *seen;      /* per sender: sent, seen by the observer */
static long delivered;         /* messages received, by all clients */
static long messages, window;
static int observer;
static int record_messages = 1;
static const char PAD[] = "abcdefghijklmnopqrstuvwxyz";

static void send_message(int s) {
    long long ns = (long long)((now() - t_start) * 1e9);
    send_line(&conns[s], "!sendmsg %ld %lld %s\n", sent[s]++, ns, PAD);
}

static void refill(int s) {
    while (sent[s] < messages && sent[s] - seen[s] < window) send_message(s);
}

/* A received message text "SEQ NS PAD" from sender FROM. */
static void got_message(conn *c, int from, const char *text) {
    char *end, *end2;
    long seq = strtol(text, &end, 10);
    long long ns = strtoll(end, &end2, 10);
    if (from < 0 || from >= nsenders || end == text || end2 == end) {
        note_error("client %d: bad message %.40s", c->idx, text);
        return;
    }
    if (record_messages) record(t_read - t_start - ns / 1e9);
    if (seq != c->last_seq[from] + 1)
        note_error("client %d: from %d got %ld after %ld", c->idx, from, seq, c->last_seq[from]);
    c->last_seq[from] = seq;
    c->msgs++;
    delivered++;
    if (c->idx == observer) {
        seen[from]++;
        refill(from);
    }
}

static void setup_senders(int k, long m, long w) {
    nsenders = k;
    messages = m;
    window = w;
    sent = calloc(k, sizeof(long));
    seen = calloc(k, sizeof(long));
    for (int i = 0; i < nconns; i++) {
        conns[i].last_seq = malloc(k * sizeof(long));
        for (int s = 0; s < k; s++) conns[i].last_seq[s] = -1;
    }
}

/* Line clients */

static void hello_nick(conn *c) { send_line(c, "!nick u%d\n", c->idx); }
static void hello_help(conn *c) { send_line(c, "!help\n"); }

static void line_client(conn *c, char *line, size_t len) {
    if (!strncmp(line, "!msg u", 6)) {
        char *sp = strchr(line + 6, ' ');
        if (sp) got_message(c, atoi(line + 6), sp + 1);
    } else if (!strncmp(line, "!joined ", 8)) {
        c->joined++;
    } else if (!strncmp(line, "!users ", 7)) {
        c->users_seen = atol(line + 7) - 1;
        c->replied = 1;
    } else if (!strncmp(line, "!help ", 6)) {
        if (++c->help == 8) c->replied = 1;
    } else {
        note_error("client %d: unexpected line %.60s", c->idx, line);
    }
    (void)len;
}

static int nline, nbinary;    /* line clients come first, then binary ones */
/* Whether every line client knows every user: from !users and !joined. */
static int all_know_all(void) {
    for (int i = 0; i < nline; i++)
        if (!conns[i].replied || conns[i].users_seen + conns[i].joined != nline + nbinary - 1)
            return 0;
    return 1;
}

/* Binary clients */

static char name_buf[16];
static const char *bname(int i) {
    snprintf(name_buf, sizeof name_buf, "b%d", i);
    return name_buf;
}

static void hello_register(conn *c) { send_command(c, 1, 2, "register", bname(c->idx)); }

static void send_receive(conn *c) {
    c->in_receive = 1;
    send_command(c, 1, 1, "receive");
}

/* One frame of the reply a binary client waits for; whether the reply is complete. */
static int binary_frame(conn *c, char *data) {
    if (c->in_receive == 1) {           /* a receive's count frame */
        c->in_receive = 2;
        c->batch = atoi(data);
        c->expect = 2 * c->batch;
        return c->expect == 0;
    }
    if (c->in_receive == 2) {           /* a sender frame, then a text frame */
        if ((c->field = !c->field)) c->from = atoi(data + 1);
        else got_message(c, c->from, data);
    }
    return --c->expect == 0;
}

/* fanout */

/* Every client but the senders gets every message; a sender, the others'. */
static int all_delivered(void) {
    return delivered >= (long)(nconns - 1) * nsenders * messages;
}

static void print_rates(const char *what, long count, double secs, double cpu_s,
                        double sys_s, double cpu_g) {
    /* The machine is shared: per server CPU second is the steadier figure.
       The server's system share is its time in the kernel (sockets, epoll). */
    printf("\"%s\": %ld, \"seconds\": %.3f, \"%s_per_s\": %.0f, "
           "\"%s_per_server_cpu_s\": %.0f, "
           "\"server_cpu_pct\": %.0f, \"server_sys_pct\": %.0f, \"generator_cpu_pct\": %.0f",
           what, count, secs, what, count / secs, what, cpu_s > 0 ? count / cpu_s : 0,
           100 * cpu_s / secs, 100 * sys_s / secs, 100 * cpu_g / secs);
}

static void print_latency(void) {
    printf(", \"latency_ms\": {\"p50\": %.2f, \"p99\": %.2f, \"max\": %.2f}",
           percentile(0.5), percentile(0.99), lat_max * 1000);
}

static void print_errors(void) {
    printf(", \"errors\": %ld", errors);
    if (errors) printf(", \"first_error\": \"%s\"", errmsg);
}

static void fanout(int argc, char **argv) {
    if (argc < 4) die("fanout CLIENTS SENDERS MESSAGES WINDOW");
    int n = atoi(argv[0]), k = atoi(argv[1]);
    if (k < 1 || k >= n) die("need 1 <= SENDERS < CLIENTS");
    make_clients(n);
    setup_senders(k, atol(argv[2]), atol(argv[3]));
    observer = n - 1;
    on_line = line_client;
    open_clients(0, n, LINE, hello_nick);
    nline = n;
    loop(all_know_all);
    if (!all_know_all()) die("timed out waiting for the joins to settle");

    double t0 = now(), cs0 = cpu_server(), ss0 = server_sys_s, cg0 = cpu_self();
    for (int s = 0; s < k; s++) refill(s);
    loop(all_delivered);
    double secs = now() - t0, cs = cpu_server() - cs0, ss = server_sys_s - ss0, cg = cpu_self() - cg0;

    long got = 0, lost = 0;
    for (int i = 0; i < n; i++) {
        long want = k * messages - (i < k ? messages : 0);
        got += conns[i].msgs;
        if (conns[i].msgs < want) lost += want - conns[i].msgs;
    }
    printf("{\"workload\": \"%sfanout\", \"clients\": %d, \"senders\": %d, \"messages\": %ld, "
           "\"window\": %ld, ", use_ws ? "ws-" : "", n, k, k * messages, window);
    print_rates("deliveries", got, secs, cs, ss, cg);
    printf(", \"lost\": %ld", lost);
    print_latency();
    print_errors();
    printf("}\n");
}

/* join */

static void join(int argc, char **argv) {
    if (argc < 1) die("join CLIENTS");
    int n = atoi(argv[0]);
    make_clients(n);
    on_line = line_client;
    open_clients(0, n, LINE, hello_help);
    for (int i = 0; i < n; i++) conns[i].replied = 0;
    nline = n;

    double t0 = now(), cs0 = cpu_server(), ss0 = server_sys_s, cg0 = cpu_self();
    for (int i = 0; i < n; i++) hello_nick(&conns[i]);
    loop(all_know_all);
    double secs = now() - t0, cs = cpu_server() - cs0, ss = server_sys_s - ss0, cg = cpu_self() - cg0;
    if (!all_know_all()) note_error("timed out: not every client saw every join");
    printf("{\"workload\": \"join\", ");
    print_rates("joins", n, secs, cs, ss, cg);
    print_errors();
    printf("}\n");
}

static void idle_frame(conn *c, char *data, size_t len);

/* mailbox: each client sends to the next, then receives, ROUNDS times */

static long rounds;

static void send_next(conn *c) {
    char text[64];
    long long ns = (long long)((now() - t_start) * 1e9);
    snprintf(text, sizeof text, "%ld %lld", c->rounds, ns);
    c->in_receive = 0;
    send_command(c, 1, 3, "send", bname((c->idx + 1) % nconns), text);
}

static void mailbox_frame(conn *c, char *data, size_t len) {
    if (!c->in_receive && strcmp(data, "Message added to storage!"))
        note_error("client %d: reply %.60s", c->idx, data);
    if (!binary_frame(c, data)) return;
    record(now() - c->t_cmd);
    if (!c->in_receive) {
        send_receive(c);
        return;
    }
    if (c->rounds < rounds) c->rounds++;
    if (c->rounds < rounds) send_next(c);
    else if (c->msgs < rounds) send_receive(c);  /* the one before may not be done */
    (void)len;
}

static int mailbox_done(void) {
    for (int i = 0; i < nconns; i++)
        if (conns[i].rounds < rounds || conns[i].msgs < rounds) return 0;
    return 1;
}

static void mailbox(int argc, char **argv) {
    if (argc < 2) die("mailbox CLIENTS ROUNDS");
    int n = atoi(argv[0]);
    rounds = atol(argv[1]);
    make_clients(n);
    setup_senders(n, rounds, 1);
    observer = -1;
    record_messages = 0;             /* the latency here is the commands' */
    on_frame = idle_frame;
    open_clients(0, n, BINARY, hello_register);
    on_frame = mailbox_frame;

    double t0 = now(), cs0 = cpu_server(), ss0 = server_sys_s, cg0 = cpu_self();
    for (int i = 0; i < n; i++) { conns[i].commands = 0; send_next(&conns[i]); }
    loop(mailbox_done);
    double secs = now() - t0, cs = cpu_server() - cs0, ss = server_sys_s - ss0, cg = cpu_self() - cg0;

    long commands = 0, lost = 0;
    for (int i = 0; i < n; i++) {
        commands += conns[i].commands;
        if (conns[i].msgs < rounds) lost += rounds - conns[i].msgs;
    }
    printf("{\"workload\": \"mailbox\", \"clients\": %d, \"rounds\": %ld, ", n, rounds);
    print_rates("commands", commands, secs, cs, ss, cg);
    printf(", \"messages\": %ld, \"lost\": %ld", (long)n * rounds, lost);
    print_latency();
    print_errors();
    printf("}\n");
}

/* idle: registered binary connections that then say nothing */

static void idle_frame(conn *c, char *data, size_t len) {
    if (strncmp(data, "Hello, ", 7)) note_error("client %d: reply %.60s", c->idx, data);
    c->replied = 1;
    (void)len;
}

static void idle(int argc, char **argv) {
    if (argc < 1) die("idle CLIENTS");
    int n = atoi(argv[0]);
    make_clients(n);
    on_frame = idle_frame;
    long base = server_kb("VmRSS");
    double t0 = now();
    open_clients(0, n, BINARY, hello_register);
    double secs = now() - t0;
    usleep(500000);
    long rss = server_kb("VmRSS");
    printf("{\"workload\": \"%sidle\", \"connections\": %d, \"open_seconds\": %.3f, "
           "\"rss_before_kb\": %ld, \"rss_after_kb\": %ld, \"bytes_per_connection\": %.0f",
           use_ws ? "ws-" : "", n, secs, base, rss, (rss - base) * 1024.0 / n);
    print_errors();
    printf("}\n");
}

/* cross: line senders, binary receivers polling their mailboxes */

static void cross_frame(conn *c, char *data, size_t len) {
    if (!binary_frame(c, data)) return;
    if (c->msgs < nsenders * messages) {
        /* poll again at once if the mailbox had mail, else in 1 ms */
        if (c->batch) send_receive(c);
        else c->poll_at = now() + 0.001;
    }
    (void)len;
}

static void cross_tick(void) {
    double t = now();
    for (int i = nline; i < nconns; i++) {
        conn *c = &conns[i];
        if (c->poll_at && c->poll_at <= t) {
            c->poll_at = 0;
            send_receive(c);
        }
    }
}

static void cross(int argc, char **argv) {
    if (argc < 5) die("cross LINE SENDERS BINARY MESSAGES WINDOW");
    nline = atoi(argv[0]);
    int k = atoi(argv[1]), b = nbinary = atoi(argv[2]);
    if (k < 1 || k >= nline) die("need 1 <= SENDERS < LINE");
    make_clients(nline + b);
    setup_senders(k, atol(argv[3]), atol(argv[4]));
    observer = nline - 1;
    on_line = line_client;
    on_frame = idle_frame;
    open_clients(0, nline, LINE, hello_nick);
    open_clients(nline, b, BINARY, hello_register);
    loop(all_know_all);
    if (!all_know_all()) die("timed out waiting for the joins to settle");
    on_frame = cross_frame;
    on_tick = cross_tick;

    double t0 = now(), cs0 = cpu_server(), ss0 = server_sys_s, cg0 = cpu_self();
    for (int i = nline; i < nconns; i++) send_receive(&conns[i]);
    for (int s = 0; s < k; s++) refill(s);
    loop(all_delivered);
    double secs = now() - t0, cs = cpu_server() - cs0, ss = server_sys_s - ss0, cg = cpu_self() - cg0;

    long line_got = 0, mail_got = 0, lost = 0;
    for (int i = 0; i < nconns; i++) {
        long want = k * messages - (i < k ? messages : 0);
        *(i < nline ? &line_got : &mail_got) += conns[i].msgs;
        if (conns[i].msgs < want) lost += want - conns[i].msgs;
    }
    printf("{\"workload\": \"cross\", \"line_clients\": %d, \"senders\": %d, "
           "\"binary_clients\": %d, \"messages\": %ld, \"window\": %ld, "
           "\"line_deliveries\": %ld, \"mailbox_deliveries\": %ld, ",
           nline, k, b, k * messages, window, line_got, mail_got);
    print_rates("deliveries", line_got + mail_got, secs, cs, ss, cg);
    printf(", \"lost\": %ld", lost);
    print_latency();
    print_errors();
    printf("}\n");
}

int main(int argc, char **argv) {
    if (argc < 5) die("usage: loadgen WORKLOAD PORT SERVER_PID TIMEOUT ARGS...");
    port = atoi(argv[2]);
    if (getenv("LOADGEN_SENDER_PORT")) sender_port = atoi(getenv("LOADGEN_SENDER_PORT"));
    server_pid = atoi(argv[3]);
    t_start = now();
    deadline = t_start + atof(argv[4]);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if ((ep = epoll_create1(0)) < 0) die("epoll_create1");
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *w = argv[1];
    if (!strncmp(w, "ws-", 3)) use_ws = 1, w += 3;
    argc -= 5, argv += 5;
    if (!strcmp(w, "fanout")) fanout(argc, argv);
    else if (!strcmp(w, "join")) join(argc, argv);
    else if (!strcmp(w, "mailbox")) mailbox(argc, argv);
    else if (!strcmp(w, "idle")) idle(argc, argv);
    else if (!strcmp(w, "cross")) cross(argc, argv);
    else die("unknown workload %s", w);
    return 0;
}
