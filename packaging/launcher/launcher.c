/*
 * pfs launcher: runs a pipeline's commands inside the user's container, for the worker sidecar.
 *
 * Built static (gcc -static -O2 -o launcher launcher.c), it needs nothing from the image it runs
 * in. It connects to the worker's unix socket ($PFS_LAUNCHER_SOCKET, waiting for it to appear) and
 * then, for each request, runs one command and streams its output back:
 *
 *   a message is: 1 byte type, 4 bytes length (big endian), that many bytes.
 *   worker -> launcher  'R' run: NUL-terminated fields: uid, gid (-1: as is), cwd ("" : as is),
 *                           timeout in milliseconds (0: none), argc, argv..., envc, env...,
 *                           then the rest of the message is the command's stdin.
 *   launcher -> worker  'H' hello (once, on connecting); 'O' stdout bytes; 'E' stderr bytes;
 *                       'X' the end: "exit N", "signal N" or "timeout"; 'F' cannot run: a reason;
 *                       'T' (at any time, once) the pod is terminating: the launcher got SIGTERM.
 *
 * Kubernetes stops a pod by sending SIGTERM to its containers, the user's first (the sidecar only
 * once it has ended), and SIGKILL after the grace period. The launcher does not stop at SIGTERM:
 * it tells the worker ('T'), which lets the running command finish, saves its output and closes
 * the socket; then the launcher exits 0.
 *
 * The command leads its own process group, killed whole (SIGKILL) at the timeout. When the
 * worker goes (the socket closes) the launcher kills what runs and exits 0, which ends the pod.
 *
 * The device-plugin fuse mode ($PFS_LAUNCHER_MOUNT, e.g. /pfs): before connecting, the launcher
 * opens /dev/fuse, mounts it there (it has CAP_SYS_ADMIN, the unprivileged sidecar has not),
 * drops CAP_SYS_ADMIN for good (bounding set, then effective, permitted and inheritable), and
 * passes the descriptor with its hello (SCM_RIGHTS): the worker serves the file system on it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_MESSAGE (64u << 20)

static int sock = -1;
static int term_pipe[2] = {-1, -1}; /* SIGTERM's handler writes a byte; the loops poll it */
static int told; /* whether the worker was told that the pod is terminating */

static void on_term(int sig) {
    (void)sig;
    int saved = errno;
    (void)!write(term_pipe[1], "T", 1);
    errno = saved;
}

static void die(const char *what) {
    fprintf(stderr, "pfs launcher: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void send_message(char type, const void *data, uint32_t len) {
    unsigned char head[5] = {(unsigned char)type, len >> 24, len >> 16, len >> 8, len};
    if (write_all(sock, head, 5) < 0 || write_all(sock, data, len) < 0) exit(0); /* the worker is gone */
}

/* Tell the worker, once, that the pod is terminating (after SIGTERM). */
static void tell_terminating(void) {
    char buf[16];
    while (read(term_pipe[0], buf, sizeof buf) > 0) {}
    if (!told) send_message('T', "", 0);
    told = 1;
}

/* The next message, or exit(0) when the worker closed the socket. */
static char *receive(char *type, uint32_t *len) {
    unsigned char head[5];
    for (;;) { /* between commands: a SIGTERM is told at once */
        struct pollfd fds[2] = {{sock, POLLIN, 0}, {term_pipe[0], POLLIN, 0}};
        if (poll(fds, 2, -1) < 0 && errno != EINTR) die("poll");
        if (fds[1].revents) tell_terminating();
        if (fds[0].revents) break;
    }
    if (read_all(sock, head, 5) < 0) exit(0);
    *type = (char)head[0];
    *len = (uint32_t)head[1] << 24 | (uint32_t)head[2] << 16 | (uint32_t)head[3] << 8 | head[4];
    if (*len > MAX_MESSAGE) {
        fprintf(stderr, "pfs launcher: a message of %u bytes is too large\n", *len);
        exit(1);
    }
    char *data = malloc(*len + 1);
    if (data == NULL) die("malloc");
    if (read_all(sock, data, *len) < 0) exit(0);
    data[*len] = '\0';
    return data;
}

static void fail(const char *fmt, const char *arg) {
    char text[512];
    snprintf(text, sizeof text, fmt, arg);
    send_message('F', text, (uint32_t)strlen(text));
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Split the run request's fields; returns 0, or -1 for a malformed request. */
struct request {
    long uid, gid, timeout_ms;
    char *cwd;
    char **argv, **env;
    char *stdin_data;
    size_t stdin_len;
};

static char *field(char **p, char *end) {
    char *start = *p;
    char *nul = memchr(start, '\0', (size_t)(end - start));
    if (nul == NULL) return NULL;
    *p = nul + 1;
    return start;
}

static char **fields(char **p, char *end) {
    char *count = field(p, end);
    if (count == NULL) return NULL;
    long n = strtol(count, NULL, 10);
    if (n < 0 || n > 100000) return NULL;
    char **out = calloc((size_t)n + 1, sizeof *out);
    if (out == NULL) die("calloc");
    for (long i = 0; i < n; i++)
        if ((out[i] = field(p, end)) == NULL) return NULL;
    return out;
}

static int parse(char *data, uint32_t len, struct request *r) {
    char *p = data, *end = data + len, *f;
    if ((f = field(&p, end)) == NULL) return -1;
    r->uid = strtol(f, NULL, 10);
    if ((f = field(&p, end)) == NULL) return -1;
    r->gid = strtol(f, NULL, 10);
    if ((r->cwd = field(&p, end)) == NULL) return -1;
    if ((f = field(&p, end)) == NULL) return -1;
    r->timeout_ms = strtol(f, NULL, 10);
    if ((r->argv = fields(&p, end)) == NULL || r->argv[0] == NULL) return -1;
    if ((r->env = fields(&p, end)) == NULL) return -1;
    r->stdin_data = p;
    r->stdin_len = (size_t)(end - p);
    return 0;
}

/* In the child: become the command. Errors go to the worker through `report` (close-on-exec). */
static void become(struct request *r, int in, int out, int err, int report) {
    setsid();
    dup2(in, 0);
    dup2(out, 1);
    dup2(err, 2);
    const char *why = NULL;
    if (r->gid >= 0 && (setgroups(0, NULL) < 0 || setgid((gid_t)r->gid) < 0)) why = "cannot set group";
    else if (r->uid >= 0 && setuid((uid_t)r->uid) < 0) why = "cannot set user";
    else if (r->cwd[0] && chdir(r->cwd) < 0) why = "cannot enter the working directory";
    if (why == NULL) {
        signal(SIGPIPE, SIG_DFL);
        execvpe(r->argv[0], r->argv, r->env);
        why = "cannot run the command";
    }
    char text[512];
    snprintf(text, sizeof text, "%s: %s", why, strerror(errno));
    write_all(report, text, strlen(text));
    _exit(127);
}

static void run(struct request *r) {
    int in[2], out[2], err[2], report[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 ||
        pipe2(report, O_CLOEXEC) < 0)
        return fail("cannot make pipes: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) return fail("cannot fork: %s", strerror(errno));
    if (pid == 0) become(r, in[0], out[1], err[1], report[1]);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    close(report[1]);
    char why[512];
    ssize_t n = read(report[0], why, sizeof why - 1); /* EOF once exec succeeded */
    close(report[0]);
    if (n > 0) {
        why[n] = '\0';
        waitpid(pid, NULL, 0);
        close(in[1]);
        close(out[0]);
        close(err[0]);
        send_message('F', why, (uint32_t)n);
        return;
    }
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    size_t fed = 0;
    if (r->stdin_len == 0) {
        close(in[1]);
        in[1] = -1;
    }
    long long deadline = r->timeout_ms > 0 ? now_ms() + r->timeout_ms : 0;
    int timed_out = 0;
    char buf[65536];
    while (out[0] >= 0 || err[0] >= 0) {
        struct pollfd fds[5] = {
            {out[0], POLLIN, 0}, {err[0], POLLIN, 0}, {in[1], POLLOUT, 0}, {sock, POLLIN, 0}, {term_pipe[0], POLLIN, 0}};
        int wait = -1;
        if (deadline) {
            long long left = deadline - now_ms();
            if (left <= 0) {
                timed_out = 1;
                kill(-pid, SIGKILL);
                deadline = 0;
                continue;
            }
            wait = (int)(left > 1000 ? 1000 : left);
        }
        if (poll(fds, 5, wait) < 0 && errno != EINTR) die("poll");
        if (fds[4].revents) tell_terminating(); /* the command runs on to its end */
        for (int i = 0; i < 2; i++) {
            int *fd = i == 0 ? &out[0] : &err[0];
            if (*fd >= 0 && fds[i].revents) {
                n = read(*fd, buf, sizeof buf);
                if (n > 0) send_message(i == 0 ? 'O' : 'E', buf, (uint32_t)n);
                else if (n == 0 || errno != EINTR) {
                    close(*fd);
                    *fd = -1;
                }
            }
        }
        if (in[1] >= 0 && fds[2].revents) {
            n = write(in[1], r->stdin_data + fed, r->stdin_len - fed);
            if (n > 0) fed += (size_t)n;
            if ((n < 0 && errno != EAGAIN && errno != EINTR) || fed == r->stdin_len) {
                close(in[1]); /* all fed, or the command does not read it */
                in[1] = -1;
            }
        }
        if (fds[3].revents) { /* the worker went away (or asks something mid-run): stop */
            kill(-pid, SIGKILL);
            exit(0);
        }
    }
    if (in[1] >= 0) close(in[1]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (timed_out) kill(-pid, SIGKILL); /* what the command left behind in its group */
    char end[64];
    if (timed_out) snprintf(end, sizeof end, "timeout");
    else if (WIFEXITED(status)) snprintf(end, sizeof end, "exit %d", WEXITSTATUS(status));
    else snprintf(end, sizeof end, "signal %d", WTERMSIG(status));
    send_message('X', end, (uint32_t)strlen(end));
}

/* Mount /dev/fuse at `where`; returns the descriptor. */
static int mount_fuse(const char *where) {
    int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) die("cannot open /dev/fuse");
    char options[128];
    snprintf(options, sizeof options, "fd=%d,rootmode=40000,user_id=%d,group_id=%d,allow_other", fd, (int)getuid(),
             (int)getgid());
    if (mount("pfsfuse", where, "fuse.pfs", MS_NOSUID | MS_NODEV, options) < 0) die("cannot mount /dev/fuse");
    return fd;
}

/* No CAP_SYS_ADMIN from here on, for this process and every command it runs. */
static void drop_sys_admin(void) {
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) < 0) die("cannot drop CAP_SYS_ADMIN from the bounding set");
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    if (syscall(SYS_capget, &head, caps) < 0) die("capget");
    unsigned bit = 1u << (CAP_SYS_ADMIN % 32), word = CAP_SYS_ADMIN / 32;
    caps[word].effective &= ~bit;
    caps[word].permitted &= ~bit;
    caps[word].inheritable &= ~bit;
    if (syscall(SYS_capset, &head, caps) < 0) die("cannot drop CAP_SYS_ADMIN");
}

/* The hello, with the FUSE descriptor attached when there is one. */
static void send_hello(int fuse_fd) {
    char msg[32];
    int n = snprintf(msg + 5, sizeof msg - 5, "%d", (int)getpid());
    msg[0] = 'H';
    msg[1] = msg[2] = msg[3] = 0;
    msg[4] = (char)n;
    struct iovec iov = {msg, (size_t)n + 5};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fuse_fd >= 0) {
        memset(&control, 0, sizeof control);
        mh.msg_control = control.buf;
        mh.msg_controllen = sizeof control.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fuse_fd, sizeof(int));
    }
    if (sendmsg(sock, &mh, MSG_NOSIGNAL) != (ssize_t)iov.iov_len) die("cannot say hello");
}

int main(void) {
    const char *path = getenv("PFS_LAUNCHER_SOCKET");
    if (path == NULL || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        fprintf(stderr, "pfs launcher: set PFS_LAUNCHER_SOCKET to the worker's socket\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    /* As a container's PID 1, without a handler SIGTERM would do nothing at all. */
    if (pipe2(term_pipe, O_CLOEXEC | O_NONBLOCK) < 0) die("pipe");
    struct sigaction term = {.sa_handler = on_term, .sa_flags = SA_RESTART};
    sigemptyset(&term.sa_mask);
    sigaction(SIGTERM, &term, NULL);
    const char *where = getenv("PFS_LAUNCHER_MOUNT");
    int fuse_fd = -1;
    if (where != NULL && *where) {
        fuse_fd = mount_fuse(where);
        drop_sys_admin();
    }
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    strcpy(addr.sun_path, path);
    for (;;) { /* the worker sidecar may still be starting */
        sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (sock < 0) die("socket");
        if (connect(sock, (struct sockaddr *)&addr, sizeof addr) == 0) break;
        close(sock);
        usleep(100000);
    }
    send_hello(fuse_fd);
    if (fuse_fd >= 0) close(fuse_fd); /* the worker has its own copy now */
    for (;;) {
        char type;
        uint32_t len;
        char *data = receive(&type, &len);
        struct request r = {0};
        if (type != 'R' || parse(data, len, &r) < 0) fail("%s", "a malformed request");
        else run(&r);
        free(r.argv);
        free(r.env);
        free(data);
    }
}
