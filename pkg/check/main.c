/* The program `make test-install` builds against an installed coframe,
 * through pkg-config and through CMake's find_package(coframe). It only
 * uses what works before the core does: the version macros and
 * coro_strerror. EXPECT_MAJOR/MINOR/PATCH come from Cargo.toml. */
#include <coframe.h>

#include <stdio.h>
#include <string.h>

#if !defined(COFRAME_VERSION_MAJOR) || !defined(COFRAME_VERSION_MINOR) || \
    !defined(COFRAME_VERSION_PATCH)
#error "coframe.h does not define COFRAME_VERSION_MAJOR/MINOR/PATCH"
#endif
#if !defined(EXPECT_MAJOR) || !defined(EXPECT_MINOR) || !defined(EXPECT_PATCH)
#error "build with -DEXPECT_MAJOR=.. -DEXPECT_MINOR=.. -DEXPECT_PATCH=.."
#endif
#if COFRAME_VERSION_MAJOR != EXPECT_MAJOR || COFRAME_VERSION_MINOR != EXPECT_MINOR || \
    COFRAME_VERSION_PATCH != EXPECT_PATCH
#error "coframe.h's COFRAME_VERSION_* differ from Cargo.toml's version"
#endif

int main(void) {
    const char *ok = coro_strerror(CORO_OK);
    const char *timedout = coro_strerror(CORO_ETIMEDOUT);
    const char *unknown = coro_strerror(12345);
    if (ok == NULL || timedout == NULL || unknown == NULL || *timedout == '\0' ||
        strcmp(ok, timedout) == 0 || strcmp(timedout, unknown) == 0) {
        fprintf(stderr, "install check: coro_strerror gave unexpected strings\n");
        return 1;
    }
    printf("install check: coframe %d.%d.%d, coro_strerror(CORO_ETIMEDOUT) = \"%s\"\n",
           COFRAME_VERSION_MAJOR, COFRAME_VERSION_MINOR, COFRAME_VERSION_PATCH, timedout);
    return 0;
}
