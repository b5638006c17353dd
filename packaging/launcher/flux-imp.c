/* flux-imp: the setuid launcher of the Python flux-imp.
 *
 * Linux ignores the setuid bit on scripts, so this is installed setuid root
 * and starts a fixed Python interpreter, isolated, on a fixed module.  It
 * parses nothing and reads no configuration: it scrubs the process state a
 * caller could have planted, checks that only root can change the
 * interpreter and the import guard, hands the caller's environment, umask
 * and cwd to Python as data on fd 3, and execs.  Python's first act, as
 * root, is loading the import guard (bootstrap below).  Everything is fixed
 * at build time.
 *
 * FLUX_IMP_PROXY, if built in, is the lingering helper (flux-imp-proxy.c)
 * the root Python parent execs once a job runs.  Judged like the
 * interpreter when it is there, it is named to Python (main(proxy=...));
 * absent, or when not running as root, Python lingers itself.
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
/* A test build reads the *.toml files in TEST_CONFDIR unless FLUX_IMP_CONFIG_PATTERN
 * says otherwise, as upstream's reads its source tree's imp.conf.d. */
#if FLUX_IMP_TEST_BUILD && !defined(FLUX_IMP_TEST_CONFDIR)
#error "a test build needs FLUX_IMP_TEST_CONFDIR (absolute path)"
#endif
#ifndef SYS_close_range
#define SYS_close_range 436 /* same number on every architecture */
#endif

#define STR_(x) #x
#define STR(x) STR_(x)
#define LAUNCH_FD 3

/* Compile-time code: the only Python the interpreter is told to run.  The
 * Makefile restricts SITEDIR, SITEARCH, SYSCONFDIR, TEST_CONFDIR and MODULE
 * to characters safe inside it.
 *
 * SITEDIR goes after the standard library, as site-packages normally does,
 * so no third-party module there can shadow a standard one; SITEARCH
 * (Fedora keeps compiled extensions in lib64) after it.  Then, first of
 * all, as root, the import guard, flux_imp/imp/guard.py, loaded by its path
 * in SITEDIR from modules the interpreter holds already (nothing read from
 * a file before it): check_install() has judged that file, its byte code
 * and every directory above them.  From then on nothing root imports may be
 * changeable by anyone but root: the guard stands in for the interpreter's
 * path finder and judges each file it finds by check_root_only()'s rule,
 * and loads flux_imp's own importer (flux_imp/imp/loader.py).  SYSCONFDIR
 * is passed, so the Python side reads exactly the config tree this binary
 * was built for; a test build also passes its TEST_CONFDIR pattern. */
#ifdef FLUX_IMP_SITEARCH
#define APPEND_SITEARCH "sys.path.append(\"" FLUX_IMP_SITEARCH "\");"
#else
#define APPEND_SITEARCH ""
#endif
#if FLUX_IMP_TEST_BUILD
#define TEST_PATTERN_ARG ",test_pattern=\"" FLUX_IMP_TEST_CONFDIR "/*.toml\""
#else
#define TEST_PATTERN_ARG ""
#endif
#define GUARD_PY FLUX_IMP_SITEDIR "/flux_imp/imp/guard.py"
#define GUARD_PYCACHE FLUX_IMP_SITEDIR "/flux_imp/imp/__pycache__"
#define BOOTSTRAP(proxy_arg)                                                   \
    "import sys\n"                                                             \
    "sys.path.append(\"" FLUX_IMP_SITEDIR "\");" APPEND_SITEARCH "\n"          \
    "from _frozen_importlib_external import spec_from_file_location\n"         \
    "from _frozen_importlib import _load\n"                                    \
    "_load(spec_from_file_location(\"flux_imp.imp.guard\", \"" GUARD_PY "\"))" \
    ".start(\"" FLUX_IMP_SITEDIR "\")\n"                                       \
    "from " FLUX_IMP_MODULE " import main;"                                    \
    "main(test_build=" STR(FLUX_IMP_TEST_BUILD) ",sysconfdir=\"" FLUX_IMP_SYSCONFDIR "\"" \
    TEST_PATTERN_ARG proxy_arg ")"
static const char bootstrap[] = BOOTSTRAP(""); /* Python lingers itself */
#ifdef FLUX_IMP_PROXY
static const char bootstrap_proxy[] = BOOTSTRAP(",proxy=\"" FLUX_IMP_PROXY "\"");
#endif

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

/* PYTHON must be a binary: for a script ("#!") the kernel would run an
 * interpreter that nothing here has checked. */
static void check_elf(const char *path)
{
    char magic[4];
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        die(path);
    ssize_t n = -1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        n = read(fd, magic, sizeof(magic));
    close(fd);
    if (n != (ssize_t)sizeof(magic) || memcmp(magic, "\177ELF", sizeof(magic)) != 0) {
        fprintf(stderr, "flux-imp: Fatal: %s: not an ELF executable\n", path);
        exit(1);
    }
}

/* check_root_only() of a path as built (its directories hold any symlink)
 * and of its real path (the directories holding what is actually run). */
static void check_both(const char *path)
{
    char real[PATH_MAX];
    check_root_only(path);
    if (!realpath(path, real))
        die(path);
    check_root_only(real);
}

/* The guard runs before anything in Python can judge it: its source, and
 * its byte code for whatever interpreter (every guard.*.pyc: Python reads
 * one of them if it is current, else the source), with the directory that
 * holds them or could gain them. */
static void check_guard(void)
{
    check_both(GUARD_PY);
    DIR *d = opendir(GUARD_PYCACHE);
    if (!d) {
        if (errno == ENOENT)
            return; /* only root could make it: GUARD_PY's directory is judged */
        die(GUARD_PYCACHE);
    }
    check_both(GUARD_PYCACHE);
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        if (strncmp(e->d_name, "guard.", 6) != 0)
            continue;
        int n = snprintf(path, sizeof(path), "%s/%s", GUARD_PYCACHE, e->d_name);
        if (n < 0 || (size_t)n >= sizeof(path)) {
            errno = ENAMETOOLONG;
            die(GUARD_PYCACHE);
        }
        check_both(path);
    }
    closedir(d);
}

/* PYTHON, SITEDIR (on sys.path, so nobody but root may add modules to it
 * either) and the guard.  What is imported from there (and from the
 * standard library) is the import guard's to judge, file by file.  Returns
 * the bootstrap to run. */
static const char *check_install(void)
{
    static const char *const paths[] = {FLUX_IMP_PYTHON, FLUX_IMP_SITEDIR,
#ifdef FLUX_IMP_SITEARCH
                                        FLUX_IMP_SITEARCH
#endif
    };
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        check_both(paths[i]);
    check_elf(FLUX_IMP_PYTHON);
    check_guard();
#ifdef FLUX_IMP_PROXY
    /* The helper the root Python parent execs: judged the same way, if it
     * is there; absent, nothing runs it and Python lingers itself. */
    struct stat st;
    if (FLUX_IMP_PROXY[0] != '/') {
        errno = EINVAL; /* never search PATH or resolve against cwd */
        die("the lingering helper must be absolute");
    }
    if (stat(FLUX_IMP_PROXY, &st) < 0 && errno == ENOENT)
        return bootstrap;
    check_both(FLUX_IMP_PROXY);
    check_elf(FLUX_IMP_PROXY);
    /* Set-ID, anyone could run it as root on pids and paths of their choosing. */
    if (st.st_mode & (S_ISUID | S_ISGID)) {
        fprintf(stderr, "flux-imp: Fatal: %s: setuid or setgid\n", FLUX_IMP_PROXY);
        exit(1);
    }
    return bootstrap_proxy;
#else
    return bootstrap;
#endif
}

/* The interpreter's environment: LC_ALL, and nothing the caller set, with
 * one exception.  Upstream's test build, run by root (sudo; glibc's secure
 * mode is then off), keeps LD_PRELOAD and pam_wrapper's PAM_WRAPPER*
 * variables: that is how its PAM tests drive a test PAM stack.  So a test
 * build run by real uid 0 passes those on; never for another caller, never
 * in an installed build. */
static char **interpreter_env(void)
{
    size_t n = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    char **envp = calloc(n + 2, sizeof(char *));
    if (!envp)
        die("calloc");
    size_t k = 0;
    envp[k++] = (char *)"LC_ALL=C.UTF-8";
#if FLUX_IMP_TEST_BUILD
    if (getuid() == 0) {
        for (char **e = environ; e && *e; e++) {
            if (strncmp(*e, "LD_PRELOAD=", 11) == 0 || strncmp(*e, "PAM_WRAPPER=", 12) == 0
                || strncmp(*e, "PAM_WRAPPER_", 12) == 0)
                envp[k++] = *e;
        }
    }
#endif
    return envp;
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
    const char *code = geteuid() == 0 ? check_install() : bootstrap; /* the helper: root's */

    /* -I: ignore PYTHON* and the user site, no script dir on sys.path;
     * -S: no site.py, so no .pth files run; -B: root writes no bytecode
     * (it still reads it: the import guard judges it). */
    size_t nargs = argc > 1 ? (size_t)argc - 1 : 0;
    char **args = calloc(nargs + 7, sizeof(char *));
    if (!args)
        die("calloc");
    const char *head[] = {FLUX_IMP_PYTHON, "-I", "-S", "-B", "-c", code};
    memcpy(args, head, sizeof(head));
    for (size_t k = 0; k < nargs; k++)
        args[6 + k] = argv[k + 1]; /* passed through as data, never interpreted */
    execve(FLUX_IMP_PYTHON, args, interpreter_env());
    die("execve " FLUX_IMP_PYTHON);
}
