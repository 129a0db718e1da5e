// CP.53: a task lambda with a reference parameter, given std::ref.
// expect: CP.53
#include <coframe.hpp>

#include <functional>

int main()
{
    coframe::runtime rt(1);
    int counter = 0;
#ifdef COFRAME_FAIL
    auto bump = [](int &c) -> coframe::task<void> {
        c++;
        co_return;
    };
    coframe::spawn(rt, bump, std::ref(counter)).get();
#else
    auto bump = [](std::reference_wrapper<int> c) -> coframe::task<void> {
        c.get()++;
        co_return;
    };
    coframe::spawn(rt, bump, std::ref(counter)).get();
#endif
    return counter == 1 ? 0 : 1;
}
