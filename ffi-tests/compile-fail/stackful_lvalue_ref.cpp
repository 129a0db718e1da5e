// A stackful body with a non-const lvalue reference parameter: spawn
// passes it an rvalue copy, which cannot bind (as with std::thread);
// std::ref is the way to share.
// expect: CP.53
#include <coframe.hpp>

#include <functional>

int main()
{
    coframe::runtime rt(1);
    int counter = 0;
    auto bump = [](int &c) { c++; };
#ifdef COFRAME_FAIL
    coframe::spawn(rt, bump, counter).get();
#else
    coframe::spawn(rt, bump, std::ref(counter)).get();
#endif
    return counter == 1 ? 0 : 1;
}
