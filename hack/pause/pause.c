/*
 * pause: the sandbox ("infra") process of every pod on the local cluster.
 *
 * It holds the pod's namespaces open and does nothing else: it sleeps until
 * SIGINT or SIGTERM arrives and then exits 0.  As PID 1 of a shared PID
 * namespace it also reaps orphaned children, like upstream's pause.
 * Built with `gcc -static` and shipped FROM scratch (see Dockerfile), so the
 * cluster needs no registry.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "sockdebug-pause 3.10"

static void on_term(int sig)
{
    (void)sig;
    _exit(0);
}

static void on_child(int sig)
{
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "-v") == 0 || strcmp(argv[1], "--version") == 0)) {
        puts(VERSION);
        return 0;
    }
    if (getpid() != 1)
        fprintf(stderr, "pause: warning: not running as PID 1\n");

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_term;
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
        perror("pause: sigaction");
        return 1;
    }
    sa.sa_handler = on_child;
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) < 0) {
        perror("pause: sigaction(SIGCHLD)");
        return 2;
    }
    for (;;)
        pause();
    return 42; /* not reached */
}
