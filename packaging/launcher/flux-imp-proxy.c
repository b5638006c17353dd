/* flux-imp-proxy: the lingering phase of the IMP's privileged parent.
 *
 * Not setuid: the root Python parent (flux_imp/imp/proxy.py) forks the job,
 * then execs this with every signal still blocked (the mask and pending
 * signals survive execve: none sent during the hand-over is lost).  Python
 * decided everything; this carries it out in far less memory than an
 * interpreter: forward signals, SIGUSR1 kills the job, wait for the child
 * (a zombie until its cgroup is empty) and that cgroup, sd_notify, remove the
 * job cgroup, send its audit record, exit as the child did.  argv and the
 * environment: see proxy.py's _hand_over.  Messages are log.py's and
 * audit.py's, byte for byte. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifndef SYS_close_range
#define SYS_close_range 436 /* same number on every architecture */
#endif

static pid_t child, target, group; /* the job; whom signals go to; what SIGUSR1 also kills */
static sigset_t forwarded, handled, waited; /* forwarded; + SIGUSR1; + SIGCHLD */
static const char *job, *impcg, *notify_to, *syslog_path, *fb_dir, *fb_name; /* "": none */
static uid_t uid; /* the caller's, the fs ids a NOTIFY_SOCKET path is reached with */
static gid_t gid;
static long priority; /* the audit record's syslog priority, facility included */
static char why[PATH_MAX + 64]; /* a fallback failure no errno names */

/* stderr as log.py writes it: cut to 4095 bytes ('+'), no trailing CR/LF,
 * control characters but tab as '?'. */
static void say(const char *level, const char *fmt, ...)
{
    char buf[4200]; /* prefix, 4095 bytes, newline */
    int n = snprintf(buf, sizeof(buf), "flux-imp: %s: ", level); /* level is ours: short */
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, 4096, fmt, ap); /* keeps at most 4095 bytes */
    va_end(ap);
    m = m < 0 ? 0 : m; /* an encoding error: an empty message */
    if (m >= 4096)
        buf[n + 4094] = '+', m = 4095; /* log.py: raw[:4094] + "+" */
    while (m > 0 && (buf[n + m - 1] == '\n' || buf[n + m - 1] == '\r'))
        m--; /* rstrip(b"\r\n") */
    for (int i = n; i < n + m; i++) /* no control character reaches a tty or a parser */
        if (((unsigned char)buf[i] < 0x20 && buf[i] != '\t') || buf[i] == 0x7f)
            buf[i] = '?';
    buf[n + m] = '\n';
    (void)!write(2, buf, (size_t)(n + m + 1)); /* stderr gone: nowhere to report */
}

/* A number Python wrote, or exit: this runs as root on argv alone. */
static long num(const char *s)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        say("Fatal", "proxy: bad argument '%s'", s), exit(1);
    return v;
}

/* Signal each pid in DIR/cgroup.procs but ours: how many; -1 if none could
 * be (unreadable, or every kill failed), as cgroup.py's CgroupInfo.kill. */
static int kill_procs(const char *dir, int sig)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
    FILE *f = fopen(path, "re");
    int count = 0, failed = 0;
    long pid;
    while (f && fscanf(f, "%ld", &pid) == 1)
        if (pid != getpid()) /* the IMP stays to wait */
            kill((pid_t)pid, sig) == 0 ? count++ : (failed = 1);
    if (f)
        fclose(f);
    return !f || (failed && count == 0) ? -1 : count;
}

/* "SIGKILL the IMP's children": the job's process is its only child. */
static void kill_child(int warn_forward)
{
    if (kill(child, SIGKILL) == 0)
        return;
    int e = errno;
    say("Warning", "Failed to send signal %d to pid %d", SIGKILL, (int)child);
    if (warn_forward) /* proxy.py's _kill_job warns, its job-cgroup case does not */
        say("Warning", "Failed to forward SIGKILL: %s", strerror(e));
}

/* One signal taken from the blocked set, as proxy.py's _Proxy.handle. */
static void handle(int sig)
{
    if (sig == SIGUSR1 && *job) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/cgroup.kill", job);
        int fd = open(path, O_WRONLY | O_CLOEXEC); /* Linux >= 5.14 */
        int rc = fd < 0 ? -1 : (int)write(fd, "1", 1), e = errno;
        if (fd >= 0)
            close(fd);
        if (rc < 0 && e == ENOENT)
            kill_procs(job, SIGKILL); /* older kernels: one pass; SIGUSR1 is repeated */
        else if (rc < 0)
            say("Warning", "Failed to forward SIGKILL: %s", strerror(e));
        kill_child(0); /* it may not have entered the cgroup yet */
    } else if (sig == SIGUSR1) {
        if (!*impcg || kill_procs(impcg, SIGKILL) < 0) /* not kill mode, or none killed */
            kill_child(1);
        if (group)
            kill(group, SIGKILL); /* run: its whole process group too */
    } else if (sig > 0 && sigismember(&forwarded, sig) == 1) {
        kill(target, sig); /* already gone: nothing to forward to */
    }
}

/* Only the fs ids change (sdnotify.py / creds.with_fs_ids); true if they took. */
static int fs_ids(uid_t u, gid_t g)
{
    setfsgid(g), setfsuid(u); /* each returns the previous id: a second call tells */
    return (gid_t)setfsgid(g) == g && (uid_t)setfsuid(u) == u;
}

/* One sd_notify datagram, as sdnotify.py's notify: 0, or -1 and errno. */
static int notify(const char *msg)
{
    if (strcmp(notify_to, "-") == 0)
        return 0; /* no NOTIFY_SOCKET */
    if (*notify_to != '/' && *notify_to != '@')
        return errno = (int)num(notify_to), -1; /* Python judged it invalid: its errno */
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(notify_to), sent = strlen(msg);
    if (len >= sizeof(sa.sun_path))
        return errno = E2BIG, -1; /* Python refused this already */
    memcpy(sa.sun_path, notify_to, len);
    sa.sun_path[0] = *notify_to == '@' ? '\0' : '/'; /* abstract: a leading NUL */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), path = *notify_to == '/';
    if (fd < 0)
        return -1;
    int rc = path && !fs_ids(uid, gid) ? (errno = EPERM, -1) /* a path: as the caller */
             : connect(fd, (struct sockaddr *)&sa, offsetof(struct sockaddr_un, sun_path) + len);
    int e = errno;
    if (path && !fs_ids(geteuid(), getegid()))
        say("Fatal", "restoring the file-system ids failed"), exit(1);
    ssize_t n = rc == 0 ? send(fd, msg, sent, 0) : -1;
    if (rc == 0 && n != (ssize_t)sent)
        rc = -1, e = n < 0 ? errno : EPROTO; /* a short datagram: EPROTO, as Python */
    close(fd);
    return errno = e, rc;
}

/* All of BUF to FD: 0, or -1 and errno. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue; /* interrupted before writing anything */
        if (n <= 0)
            return -1;
        buf += n, len -= (size_t)n;
    }
    return 0;
}

/* audit.py's _check_roots: root's, writable by no one else; else sets why. */
static int roots(int fd, const char *name, int regular)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    if (st.st_uid != 0 || (st.st_mode & 022))
        return snprintf(why, sizeof(why), "%s not owned by root, or writable by group or others",
                        name), 0;
    if (regular && !S_ISREG(st.st_mode))
        return snprintf(why, sizeof(why), "%s not a regular file", name), 0;
    return 1;
}

/* Append LINE to the fallback file, opened as audit.py's _open_fallback:
 * 0, or -1 and errno (or why). */
static int to_file(const char *line)
{
    int dflags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, fd = -1, e;
    int d = open(fb_dir, dflags);
    if (d < 0 && errno == ENOENT) { /* made root:root 0700: our egid is the caller's */
        if (mkdir(fb_dir, 0700) < 0 ? errno != EEXIST : lchown(fb_dir, 0, 0) < 0)
            return -1;
        d = open(fb_dir, dflags);
    }
    int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC; /* no FIFO */
    if (d >= 0 && roots(d, fb_dir, 0)) {
        fd = openat(d, fb_name, flags | O_CREAT | O_EXCL, 0600);
        if (fd >= 0 && fchown(fd, 0, 0) < 0)
            e = errno, close(fd), fd = -1, errno = e;
        else if (fd < 0 && errno == EEXIST)
            fd = openat(d, fb_name, flags);
    }
    e = errno;
    if (d >= 0)
        close(d);
    int rc = fd >= 0 && roots(fd, fb_name, 1) && write_all(fd, line, strlen(line)) == 0 ? 0 : -1;
    e = fd >= 0 ? errno : e;
    if (fd >= 0)
        close(fd);
    return errno = e, rc;
}

/* One record, "flux-imp[PID]: ...", as audit.py's record(): to syslog in
 * glibc's format (a stream record ends in NUL), else the fallback file. */
static void audit(const char *text)
{
    time_t now = time(NULL);
    struct tm tm;
    char stamp[64], *line = NULL;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm); /* the C locale's month names */
    int e = 0;
    if (asprintf(&line, "<%ld>%s %s", priority, stamp, text) < 0)
        line = NULL, e = ENOMEM; /* then the fallback file */
    for (int stream = 0; !e && stream < 2; stream++) {
        struct timeval tv = {.tv_sec = 5}; /* a stuck daemon: not delivered, not a hang */
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strncpy(sa.sun_path, syslog_path, sizeof(sa.sun_path) - 1);
        int fd = socket(AF_UNIX, (stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
        int ok = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0
                 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0
                 && write_all(fd, line, strlen(line) + (size_t)stream) == 0; /* + NUL */
        e = ok ? -1 : errno; /* -1: delivered */
        if (fd >= 0)
            close(fd);
        if (e != EPROTOTYPE)
            break; /* delivered, or not a stream socket either */
    }
    free(line);
    if (e < 0)
        return;
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S%z", &tm);
    size_t n = strlen(stamp);
    memmove(stamp + n - 1, stamp + n - 2, 3), stamp[n - 2] = ':'; /* +HHMM -> +HH:MM */
    if (asprintf(&line, "%s %s\n", stamp, text) < 0)
        line = NULL, errno = ENOMEM;
    if (!line || to_file(line) < 0)
        say("Warning", "audit: record not logged (%s/%s: %s): %s", fb_dir, fb_name,
            *why ? why : strerror(errno), text);
    free(line);
}

/* True while the job cgroup holds a process (unreadable: empty). */
static int busy(void)
{
    char path[PATH_MAX], buf[4096];
    snprintf(path, sizeof(path), "%s/cgroup.events", job);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf + 1, sizeof(buf) - 2);
    if (fd >= 0)
        close(fd);
    buf[0] = '\n', buf[n > 0 ? n + 1 : 1] = '\0'; /* every line follows a newline */
    return strstr(buf, "\npopulated 1\n") != NULL;
}

/* rmdir the job cgroup, as JobCgroup.remove: "populated 0" can precede
 * rmdir's view of it, so EBUSY is retried 100 x 10 ms. */
static int remove_job(void)
{
    struct timespec pause = {.tv_nsec = 10000000};
    for (int i = 0; i < 100; i++, nanosleep(&pause, NULL)) {
        if (rmdir(job) == 0 || errno == ENOENT)
            return 1;
        if (errno != EBUSY)
            return say("Warning", "cgroup: cannot remove %s: %s", job, strerror(errno)), 0;
    }
    return say("Warning", "cgroup: cannot remove %s: still busy", job), 0;
}

int main(int argc, char *argv[])
{
    (void)prctl(PR_SET_NAME, "flux-imp", 0, 0, 0); /* the name flux-core and tests look for */
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL); /* already so when Python execs us */
    if (argc != 16)
        return say("Fatal", "proxy: usage: flux-imp-proxy ARGS (run by flux-imp only)"), 1;
    child = (pid_t)num(argv[1]), target = (pid_t)num(argv[2]), group = (pid_t)num(argv[4]);
    if (child <= 1 || (target != child && target != -child) || (group && group != -child))
        return say("Fatal", "proxy: bad pids"), 1; /* never kill(0) or kill(-1) as root */
    long mask = num(argv[3]);
    sigemptyset(&forwarded);
    for (int sig = 1; sig < 63; sig++)
        if (mask >> sig & 1)
            sigaddset(&forwarded, sig);
    handled = forwarded, waited = forwarded;
    sigaddset(&handled, SIGUSR1), sigaddset(&waited, SIGUSR1), sigaddset(&waited, SIGCHLD);
    job = argv[5], impcg = argv[6], notify_to = argv[9];
    long poll_ms = num(argv[7]), settle_ms = num(argv[8]);
    uid = (uid_t)num(argv[10]), gid = (gid_t)num(argv[11]);
    syslog_path = argv[12], fb_dir = argv[13], fb_name = argv[14], priority = num(argv[15]);
    const char *yes = getenv("FLUX_IMP_RECORD_REMOVED"), *no = getenv("FLUX_IMP_RECORD_KEPT");
    (void)syscall(SYS_close_range, 3U, ~0U, 0U); /* nothing of Python's stays open */

    siginfo_t si;
    for (;;) { /* until the child exits, left unreaped: its pid (and group) stays ours */
        si.si_pid = 0;
        if (waitid(P_PID, (id_t)child, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
            return say("Fatal", "waitpid: %s", strerror(errno)), 1;
        if (si.si_pid == child)
            break;
        handle(sigwaitinfo(&waited, NULL)); /* a pending signal cannot be missed */
    }
    int exited = si.si_code == CLD_EXITED, code = si.si_status;
    char status[128]; /* the wait status in words, as proxy.py's _describe */
    if (notify("STOPPING=1") < 0)
        say("Warning", "sd_notify STOPPING=1 failed: %s", strerror(errno));
    if (exited)
        snprintf(status, sizeof(status), "STATUS=IMP child exited (%d), waiting for cgroup",
                 code & 0xff);
    else
        snprintf(status, sizeof(status), "STATUS=IMP child %s, waiting for cgroup", strsignal(code));
    (void)notify(status); /* STATUS= failures are silent, as upstream's */
    struct timespec poll = {poll_ms / 1000, poll_ms % 1000 * 1000000};
    struct timespec settle = {settle_ms / 1000, settle_ms % 1000 * 1000000};
    while (*job ? busy() : *impcg && kill_procs(impcg, 0) > 0) { /* until only we are left */
        int sig = sigtimedwait(&handled, NULL, &poll);
        if (sig > 0) /* then let the killed leave cgroup.procs */
            handle(sig), nanosleep(&settle, NULL);
    }
    if (waitpid(child, NULL, 0) < 0) /* no signal goes to its pid or group from here on */
        return say("Fatal", "waitpid: %s", strerror(errno)), 1;
    const char *record = !*job ? NULL : remove_job() ? yes : no;
    if (record && *record)
        audit(record);
    (void)notify("STATUS=cgroup is now empty, exiting");
    if (exited)
        _exit(code & 0xff);
    signal(code, SIG_DFL); /* SIGKILL keeps its default anyway */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, code);
    sigprocmask(SIG_UNBLOCK, &one, NULL); /* unblocked first, or it would not kill us */
    raise(code);
    say("Fatal", "failed to raise signal %d", code);
    _exit(128 + code);
}
