/* flux-imp-proxy: the lingering phase of the IMP's privileged parent.
 *
 * Not setuid: the root Python parent (flux_imp/imp/proxy.py, which decides
 * everything: see its _hand_over for argv and the environment) forks the job
 * and execs this with every signal still blocked (the mask and pending
 * signals survive execve: none sent during the hand-over is lost).  This
 * carries the decisions out in far less memory than an interpreter, with
 * log.py's messages and audit.py's records byte for byte.  It is installed
 * under the file name flux-imp (the Makefile refuses another), so from the
 * exec on the process is named flux-imp, the name flux-core looks for. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
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

/* argv as _hand_over writes it: the numbers, then the strings ("": none). */
enum { PID = 1, TARGET, GROUP, FORWARD, POLL_MS, SETTLE_MS, PRIORITY,
       JOB, KILL, PROCS, EVENTS, NOTIFY, SYSLOG, FB_DIR, FB_NAME, ARGC };
static long num[JOB];              /* argv's numbers, by those names */
static char **arg;                 /* argv, for its strings */
static pid_t child, target, group; /* the job; whom signals go to; what SIGUSR1 also kills */
static sigset_t handled;           /* the forwarded signals and SIGUSR1 */
static char why[4160];             /* a fallback failure no errno names */
static char line[131072 + 128];    /* a record, stamped: Python keeps records under 128 KiB */

/* stderr as log.py writes it, cut to 4095 bytes ('+').  Nothing to scrub or
 * strip: Python hands over no path with a control character in it. */
static void say(const char *level, const char *fmt, ...)
{
    char buf[4200]; /* prefix, 4095 bytes, newline */
    int n = snprintf(buf, sizeof(buf), "flux-imp: %s: ", level); /* level is ours: short */
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, 4096, fmt, ap); /* keeps at most 4095 bytes */
    va_end(ap);
    m = m < 0 ? 0 : m < 4096 ? m : (buf[n + 4094] = '+', 4095); /* log.py: raw[:4094] + "+" */
    buf[n + m] = '\n';
    (void)!write(2, buf, (size_t)(n + m + 1)); /* stderr gone: nowhere to report */
}

/* Signal each pid in PROCS (a cgroup.procs) but ours: how many; -1 if none
 * could be (unreadable, or every kill failed), as cgroup.py's CgroupInfo.kill. */
static int kill_procs(int sig)
{
    FILE *f = fopen(arg[PROCS], "re"); /* "": none */
    int count = 0, failed = 0;
    long pid;
    while (f && fscanf(f, "%ld", &pid) == 1)
        if (pid > 0 && pid != getpid()) /* the IMP stays to wait; never kill(0) */
            kill((pid_t)pid, sig) == 0 ? count++ : (failed = 1);
    return !f ? -1 : (fclose(f), failed && count == 0 ? -1 : count);
}

/* One signal taken from the blocked set, as linger.py's _handle:
 * true if there was one. */
static int handle(int sig)
{
    if (sig > 0 && sig != SIGUSR1 && sigismember(&handled, sig) == 1)
        kill(target, sig); /* forwarded; already gone: nothing to forward to */
    if (sig != SIGUSR1)
        return sig > 0; /* that, none (EINTR, a timeout), or SIGCHLD */
    int fd = *arg[KILL] ? open(arg[KILL], O_WRONLY | O_CLOEXEC) : (errno = ENOENT, -1);
    int rc = fd < 0 ? -1 : (int)write(fd, "1", 1); /* a cgroup.kill: Linux >= 5.14 */
    if (rc < 0 && errno == ENOENT) /* none, as JobCgroup.kill on older kernels, or in */
        kill_procs(SIGKILL);       /* cgroup-kill mode: one pass; SIGUSR1 is repeated */
    else if (rc < 0)
        say("Warning", "Failed to forward SIGKILL: %s", strerror(errno));
    if (fd >= 0)
        close(fd);
    kill(child, SIGKILL); /* maybe in no cgroup (yet); unreaped, so this cannot fail */
    if (group)
        kill(group, SIGKILL); /* run: its whole process group too */
    return 1;
}

/* Only the fs ids change (sdnotify.py / creds.with_fs_ids); true if they took. */
static int fs_ids(uid_t u, gid_t g)
{
    setfsgid(g), setfsuid(u); /* each returns the previous id: a second call tells */
    return (gid_t)setfsgid(g) == g && (uid_t)setfsuid(u) == u;
}

/* One sd_notify datagram, as sdnotify.py's notify: 0, or -1 and errno.
 * (Successful calls leave errno alone: the failure's is still there.) */
static int notify(const char *msg)
{
    const char *to = arg[NOTIFY];
    if (*to != '/' && *to != '@') /* "-": no NOTIFY_SOCKET; else the errno Python judged it by */
        return *to == '-' ? 0 : (errno = atoi(to), -1);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, to, sizeof(sa.sun_path) - 1); /* Python refused longer names */
    socklen_t len = (socklen_t)SUN_LEN(&sa);
    sa.sun_path[0] = *to == '@' ? '\0' : '/'; /* abstract: a leading NUL */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0), path = *to == '/';
    int rc = fd < 0 ? -1 : path && !fs_ids(getuid(), getgid()) ? (errno = EPERM, -1)
             : connect(fd, (struct sockaddr *)&sa, len); /* a path: as the caller */
    if (path && !fs_ids(geteuid(), getegid()))
        say("Fatal", "restoring the file-system ids failed"), exit(1);
    ssize_t n = rc < 0 ? -1 : send(fd, msg, strlen(msg), 0);
    if (rc == 0 && n != (ssize_t)strlen(msg))
        rc = -1, errno = n < 0 ? errno : EPROTO; /* a short datagram: EPROTO, as Python */
    if (fd >= 0)
        close(fd);
    return rc;
}

/* All of BUF to FD: 0, or -1 and errno. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue; /* a stop and SIGCONT can interrupt a timed socket write */
        if (n <= 0)
            return -1;
        buf += n, len -= (size_t)n;
    }
    return 0;
}

/* audit.py's _check_roots (and, for the file, a regular one): 1, or 0 and errno or why. */
static int roots(int fd, const char *name, int file)
{
    struct stat st;
    const char *bad = fstat(fd, &st) < 0 ? "" /* errno says */
        : st.st_uid != 0 || (st.st_mode & 022) ? "not owned by root, or writable by group or others"
        : file && !S_ISREG(st.st_mode) ? "not a regular file" : NULL;
    if (bad && *bad)
        snprintf(why, sizeof(why), "%s %s", name, bad);
    return !bad;
}

/* The fallback file opened for appending, as audit.py's _open_fallback: an
 * fd, or -1 and errno (or why). */
static int open_fallback(void)
{
    const char *dir = arg[FB_DIR], *name = arg[FB_NAME];
    int dflags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, fd = -1;
    int flags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC; /* no FIFO */
    int d = open(dir, dflags); /* made root:root 0700 if missing: our egid is the caller's */
    if (d < 0 && errno == ENOENT && (mkdir(dir, 0700) ? errno == EEXIST : !lchown(dir, 0, 0)))
        d = open(dir, dflags);
    if (d >= 0 && roots(d, dir, 0)) {
        fd = openat(d, name, flags | O_CREAT | O_EXCL, 0600);
        if (fd >= 0 && fchown(fd, 0, 0) < 0)
            close(fd), fd = -1;
        else if (fd < 0 && errno == EEXIST)
            fd = openat(d, name, flags);
    }
    if (d >= 0)
        close(d);
    if (fd >= 0 && !roots(fd, name, 1))
        close(fd), fd = -1;
    return fd;
}

/* One record, "flux-imp[PID]: ...", as audit.py's record(): to syslog in
 * glibc's format (a datagram, else a stream record ending in NUL), else to
 * the fallback file, else to stderr. */
static void audit(const char *text)
{
    time_t now = time(NULL);
    struct tm tm;
    char stamp[64], zone[16];
    localtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm); /* the C locale's month names */
    snprintf(line, sizeof(line), "<%ld>%s %s", num[PRIORITY], stamp, text);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, arg[SYSLOG], sizeof(sa.sun_path) - 1);
    int e = EPROTOTYPE; /* not a socket of the kind tried: try the other */
    for (int stream = 0; e == EPROTOTYPE && stream < 2; stream++) {
        struct timeval tv = {.tv_sec = 5}; /* a stuck daemon: not delivered, not a hang */
        int fd = socket(AF_UNIX, (stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
        e = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0
            && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0
            && write_all(fd, line, strlen(line) + (size_t)stream) == 0 ? 0 : errno; /* + NUL */
        if (fd >= 0)
            close(fd);
    }
    if (e == 0)
        return; /* delivered */
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    strftime(zone, sizeof(zone), "%z", &tm);
    snprintf(line, sizeof(line), "%s%.3s:%s %s\n", stamp, zone, zone + 3, text); /* +HH:MM */
    int fd = open_fallback();
    if (fd < 0 || write_all(fd, line, strlen(line)) < 0)
        say("Warning", "audit: record not logged (%s/%s: %s): %s", arg[FB_DIR], arg[FB_NAME],
            *why ? why : strerror(errno), text);
    if (fd >= 0)
        close(fd);
}

/* True while EVENTS (the job cgroup's cgroup.events) says it holds a
 * process (unreadable: empty). */
static int busy(void)
{
    char buf[4096] = "\n"; /* every line follows a newline; NULs after what is read */
    int fd = open(arg[EVENTS], O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? 0 : read(fd, buf + 1, sizeof(buf) - 2);
    if (fd >= 0)
        close(fd);
    return n > 0 && strstr(buf, "\npopulated 1\n") != NULL;
}

/* rmdir the job cgroup, as JobCgroup.remove: "populated 0" can precede
 * rmdir's view of it, so EBUSY is retried 100 x 10 ms.  True if it is gone. */
static int remove_job(void)
{
    struct timespec pause = {.tv_nsec = 10000000};
    int rc, tries = 0;
    while ((rc = rmdir(arg[JOB])) < 0 && errno == EBUSY && ++tries < 100)
        nanosleep(&pause, NULL);
    if (rc < 0 && errno != ENOENT) /* as Python, a warning */
        return say("Warning", "cgroup: cannot remove %s: %s", arg[JOB],
                   errno == EBUSY ? "still busy" : strerror(errno)), 0;
    return 1;
}

int main(int argc, char *argv[])
{
    (void)syscall(SYS_close_range, 3U, ~0U, 0U); /* no fd of Python's */
    struct stat self; /* set-ID, its argv would be any caller's: refuse */
    if (stat("/proc/self/exe", &self) < 0 || (self.st_mode & (S_ISUID | S_ISGID)))
        return say("Fatal", "proxy: setuid or setgid, or no /proc/self/exe"), 1;
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL); /* already so when Python execs us */
    int ok = argc == ARGC;
    for (int i = PID, end = 0; ok && i < JOB; i++) /* each number whole, as Python wrote it */
        ok = sscanf(argv[i], "%ld%n", &num[i], &end) == 1 && !argv[i][end];
    arg = argv, child = (pid_t)num[PID], target = (pid_t)num[TARGET], group = (pid_t)num[GROUP];
    if (!ok || child <= 1 || (target != child && target != -child) || (group && group != -child))
        return say("Fatal", "proxy: bad arguments (run by flux-imp only)"), 1; /* no kill(0/-1) */
    sigemptyset(&handled);
    for (int sig = 1; sig < 32; sig++) /* FORWARD's bits (standard signals), and SIGUSR1 */
        if (sig == SIGUSR1 || (num[FORWARD] >> sig & 1))
            sigaddset(&handled, sig);
    sigset_t waited = handled;
    sigaddset(&waited, SIGCHLD); /* and, until the child exits, its exit */

    siginfo_t si = {.si_pid = 0}; /* WNOHANG: the kernel writes 0 while the child runs */
    while (waitid(P_PID, (id_t)child, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != child)
        handle(sigwaitinfo(&waited, NULL)); /* a pending signal cannot be missed */
    if (si.si_pid != child) /* unreaped (WNOWAIT): its pid, and group, stay ours */
        return say("Fatal", "waitpid: %s", strerror(errno)), 1;
    int exited = si.si_code == CLD_EXITED, code = si.si_status;
    char word[32], status[128]; /* the wait status in words, as linger.py's _describe */
    snprintf(word, sizeof(word), "exited (%d)", code & 0xff);
    snprintf(status, sizeof(status), "STATUS=IMP child %s, waiting for cgroup",
             exited ? word : strsignal(code));
    if (notify("STOPPING=1") < 0)
        say("Warning", "sd_notify STOPPING=1 failed: %s", strerror(errno));
    (void)notify(status); /* STATUS= failures are silent, as upstream's */
    struct timespec poll = {.tv_sec = num[POLL_MS] / 1000, .tv_nsec = num[POLL_MS] % 1000 * 1000000};
    struct timespec settle = {.tv_sec = 0, .tv_nsec = num[SETTLE_MS] % 1000 * 1000000}; /* < 1 s */
    while (*arg[EVENTS] ? busy() : kill_procs(0) > 0) /* until only the IMP is left ("": now) */
        if (handle(sigtimedwait(&handled, NULL, &poll))) /* then let the killed leave */
            nanosleep(&settle, NULL);                     /* cgroup.procs */
    if (waitpid(child, NULL, 0) < 0) /* no signal goes to its pid or group from here on */
        return say("Fatal", "waitpid: %s", strerror(errno)), 1;
    const char *record = !*arg[JOB] ? NULL /* the "finished" record Python wrote per outcome */
                         : getenv(remove_job() ? "FLUX_IMP_RECORD_REMOVED" : "FLUX_IMP_RECORD_KEPT");
    if (record)
        audit(record);
    (void)notify("STATUS=cgroup is now empty, exiting");
    if (exited)
        _exit(code & 0xff);
    signal(code, SIG_DFL); /* SIGKILL keeps its default anyway */
    sigdelset(&all, code);
    sigprocmask(SIG_SETMASK, &all, NULL); /* unblocked first, or it would not kill us */
    raise(code);
    say("Fatal", "failed to raise signal %d", code);
    _exit(128 + code);
}
