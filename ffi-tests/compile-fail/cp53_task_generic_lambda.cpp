// CP.53: a generic task lambda taking `auto &` (caught because spawn
// invokes it with rvalue copies; `const auto &` cannot be caught, see
// docs/CPP.md).
// expect: CP.53
#include <coframe.hpp>

int main()
{
    coframe::runtime rt(1);
#ifdef COFRAME_FAIL
    auto twice = [](auto &x) -> coframe::task<int> { co_return 2 * x; };
#else
    auto twice = [](auto x) -> coframe::task<int> { co_return 2 * x; };
#endif
    return coframe::spawn(rt, twice, 21).get() == 42 ? 0 : 1;
}
