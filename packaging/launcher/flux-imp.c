/* flux-imp: the setuid launcher of the Python flux-imp.
 *
 * Linux ignores the setuid bit on scripts, so this is installed setuid root
 * and starts a fixed Python interpreter, isolated, on a fixed module.  It
 * parses nothing and reads no configuration: it scrubs the process state a
 * caller could have planted, hands the caller's environment, umask and cwd
 * to Python as data on fd 3, and execs.  Everything is fixed at build time.
 *
 * Launch data on fd 3 (a memfd, read by flux_imp/imp/launch.py):
 *   "flux-imp-launch 1\0" "umask=<4 octal digits>\0" "cwd=<path or empty>\0"
 *   "envc=<decimal>\0" then envc strings from environ, each followed by "\0".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* No defaults for paths: a build must name them (no runtime overrides). */
#if !defined(FLUX_IMP_PYTHON) || !defined(FLUX_IMP_SITEDIR)
#error "define FLUX_IMP_PYTHON and FLUX_IMP_SITEDIR (absolute paths)"
#endif
#ifndef FLUX_IMP_SYSCONFDIR
#define FLUX_IMP_SYSCONFDIR "/etc" /* configs: SYSCONFDIR/flux/{imp,security}/conf.d */
#endif
#ifndef FLUX_IMP_MODULE
#define FLUX_IMP_MODULE "flux_imp.imp.main"
#endif
#ifndef FLUX_IMP_TEST_BUILD
#define FLUX_IMP_TEST_BUILD 0
#endif
#if FLUX_IMP_TEST_BUILD != 0 && FLUX_IMP_TEST_BUILD != 1
#error "FLUX_IMP_TEST_BUILD must be 0 or 1"
#endif
#ifndef SYS_close_range
#define SYS_close_range 436 /* same number on every architecture */
#endif

#define STR_(x) #x
#define STR(x) STR_(x)
#define LAUNCH_FD 3

/* Compile-time code: the only Python the interpreter is told to run.  The
 * Makefile restricts SITEDIR, SYSCONFDIR and MODULE to characters safe
 * inside it.  SYSCONFDIR is passed here, so the Python side reads exactly
 * the config tree this binary was built for.
 * SITEDIR goes after the standard library, as site-packages normally does,
 * so no third-party module there can shadow a standard one. */
/* SITEARCH: where the distribution keeps compiled extensions, when that is
 * not SITEDIR (Fedora's lib64 site-packages holds pynacl and prctl). */
#ifdef FLUX_IMP_SITEARCH
#define APPEND_SITEARCH "sys.path.append(\"" FLUX_IMP_SITEARCH "\");"
#else
#define APPEND_SITEARCH ""
#endif
static const char bootstrap[] =
    "import sys;sys.path.append(\"" FLUX_IMP_SITEDIR "\");" APPEND_SITEARCH
    "from " FLUX_IMP_MODULE " import main;"
    "main(test_build=" STR(FLUX_IMP_TEST_BUILD) ",sysconfdir=\"" FLUX_IMP_SYSCONFDIR "\")";

/* What kind of build this is, for `make install` to read off the binary:
 * it refuses to install a test build. */
#if FLUX_IMP_TEST_BUILD
#define BUILD_KIND "test"
#else
#define BUILD_KIND "installed"
#endif
__attribute__((used)) static const char build_kind[] = "flux-imp-build-kind=" BUILD_KIND;

extern char **environ;

static void die(const char *what)
{
    fprintf(stderr, "flux-imp: Fatal: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* fds 0-2 must exist, or the first file Python opens becomes "stdout". */
static void open_std_fds(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        if (open("/dev/null", O_RDWR) != fd) /* lowest free fd: must be fd */
            exit(1); /* no usable stderr to report on yet */
    }
}

/* Inherited fds would reach root's Python and the job: close them all.
 * The bound cannot come from RLIMIT_NOFILE: a caller may lower it below
 * fds it already holds.  If neither method works, fail closed. */
static void close_other_fds(void)
{
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0)
        return;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        die("cannot close inherited file descriptors");
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end == '\0' && end != e->d_name && fd >= 3 && fd != dirfd(d))
            close((int)fd);
    }
    closedir(d);
}

/* An ignored SIGCHLD or a blocked SIGTERM survives execve: undo both. */
static void reset_signals(void)
{
    struct sigaction sa = {.sa_handler = SIG_DFL}; /* empty sa_mask, no flags */
    for (int sig = 1; sig < NSIG; sig++)
        (void)sigaction(sig, &sa, NULL); /* EINVAL for KILL/STOP/libc's own */
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
        die("sigprocmask");
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("write launch data");
        buf += n;
        len -= (size_t)n;
    }
}

/* The caller's environment, umask and cwd reach Python only as bytes on
 * fd 3, never as the interpreter's environment.  environ has already been
 * cleaned of LD_PRELOAD & co. by glibc's secure mode when we run setuid. */
static void write_launch_data(mode_t caller_umask, const char *cwd)
{
    size_t envc = 0;
    for (char **e = environ; e && *e; e++)
        envc++;
    int fd = memfd_create("flux-imp-launch", 0); /* no CLOEXEC: Python reads it */
    if (fd < 0)
        die("memfd_create");
    if (fd != LAUNCH_FD) {
        if (dup2(fd, LAUNCH_FD) < 0)
            die("dup2");
        close(fd);
    }
    char head[64];
    int n = snprintf(head, sizeof(head), "flux-imp-launch 1%cumask=%04o%ccwd=",
                     0, (unsigned)(caller_umask & 0777), 0);
    if (n < 0 || (size_t)n >= sizeof(head))
        die("launch header");
    write_all(LAUNCH_FD, head, (size_t)n);
    write_all(LAUNCH_FD, cwd, strlen(cwd) + 1); /* a path has no NUL: with NUL */
    n = snprintf(head, sizeof(head), "envc=%zu%c", envc, 0);
    if (n < 0 || (size_t)n >= sizeof(head))
        die("launch header");
    write_all(LAUNCH_FD, head, (size_t)n);
    for (size_t i = 0; i < envc; i++)
        write_all(LAUNCH_FD, environ[i], strlen(environ[i]) + 1); /* with NUL */
    if (lseek(LAUNCH_FD, 0, SEEK_SET) != 0)
        die("lseek launch data");
}

/* Refuse to run code as root that someone other than root could change:
 * the file, and every directory above it (whoever can write a directory can
 * swap its entries), except sticky ones like /tmp, whose root-owned entries
 * only root may rename.  The leaf itself must never be writable. */
static void check_root_only(const char *path)
{
    char buf[PATH_MAX];
    struct stat st;
    if (strlen(path) >= sizeof(buf))
        die("path too long");
    strcpy(buf, path);
    for (int leaf = 1;; leaf = 0) {
        if (stat(buf, &st) < 0) /* follows symlinks: judges what is run */
            die(buf);
        int writable = (st.st_mode & (S_IWGRP | S_IWOTH)) != 0;
        int sticky = !leaf && S_ISDIR(st.st_mode) && (st.st_mode & S_ISVTX);
        if (st.st_uid != 0 || (writable && !sticky)) {
            fprintf(stderr, "flux-imp: Fatal: %s: %s\n", buf,
                    "not owned by root, or writable by group or others");
            exit(1);
        }
        char *slash = strrchr(buf, '/');
        if (!slash || buf[1] == '\0')
            return; /* checked "/" */
        slash[slash == buf] = '\0'; /* "/usr" -> "/", "/usr/bin" -> "/usr" */
    }
}

/* Check both each path as built (its directories hold any symlink) and its
 * real path (the directories holding what is actually run).  SITEDIR is
 * on sys.path, so nobody but root may add modules to it either. */
static void check_install(void)
{
    static const char *const paths[] = {FLUX_IMP_PYTHON, FLUX_IMP_SITEDIR,
                                        FLUX_IMP_SITEDIR "/flux_imp",
#ifdef FLUX_IMP_SITEARCH
                                        FLUX_IMP_SITEARCH
#endif
    };
    char real[PATH_MAX];
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        check_root_only(paths[i]);
        if (!realpath(paths[i], real))
            die(paths[i]);
        check_root_only(real);
    }
}

int main(int argc, char *argv[])
{
    open_std_fds();
    close_other_fds();
    reset_signals();
    mode_t caller_umask = umask(022); /* a caller's umask 0 would leak into files root makes */
    /* The cwd is data too: only the unprivileged child returns to it.  No
     * cwd (deleted, too long, unreachable) is recorded as unknown. */
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof(cwd)) || cwd[0] != '/')
        cwd[0] = '\0';
    if (chdir("/") < 0) /* the caller's cwd must not matter to anything root does */
        die("chdir /");
    write_launch_data(caller_umask, cwd);
    if (FLUX_IMP_PYTHON[0] != '/' || FLUX_IMP_SITEDIR[0] != '/') {
        errno = EINVAL; /* never search PATH or resolve against cwd */
        die("interpreter and site dir must be absolute");
    }
    if (geteuid() == 0)
        check_install();

    /* -I: ignore PYTHON* and the user site, no script dir on sys.path;
     * -S: no site.py, so no .pth files run; -B: root writes no bytecode. */
    size_t nargs = argc > 1 ? (size_t)argc - 1 : 0;
    char **args = calloc(nargs + 7, sizeof(char *));
    if (!args)
        die("calloc");
    const char *head[] = {FLUX_IMP_PYTHON, "-I", "-S", "-B", "-c", bootstrap};
    memcpy(args, head, sizeof(head));
    for (size_t k = 0; k < nargs; k++)
        args[6 + k] = argv[k + 1]; /* passed through as data, never interpreted */
    /* Nothing the caller set reaches the interpreter's environment. */
    char *envp[] = {(char *)"LC_ALL=C.UTF-8", NULL};
    execve(FLUX_IMP_PYTHON, args, envp);
    die("execve " FLUX_IMP_PYTHON);
}
