// CP.51 and CP.53: a task that already exists, passed to spawn: the
// arguments and captures its frame refers to may already be gone.
// expect: CP.51
// expect: CP.53
#include <coframe.hpp>

#include <string>

coframe::task<std::size_t> length(std::string s) { co_return s.size(); }

int main()
{
    coframe::runtime rt(1);
#ifdef COFRAME_FAIL
    auto p = coframe::spawn(rt, length(std::string("four")));
#else
    auto p = coframe::spawn(rt, length, std::string("four"));
#endif
    return p.get() == 4 ? 0 : 1;
}
