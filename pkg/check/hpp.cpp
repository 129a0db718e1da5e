// The C++20 program `make test-install` builds against an installed
// coframe: <coframe.hpp> is found next to <coframe.h>, through pkg-config
// and through CMake's find_package(coframe), and links and runs.
#include <coframe.hpp>

coframe::task<int> answer(int x) { co_return x * 2; }

int main()
{
    coframe::runtime rt(1);
    const int a = coframe::spawn(rt, [] { return 21; }).get();
    const int b = coframe::spawn(rt, answer, a).get();
    return a == 21 && b == 42 ? 0 : 1;
}
