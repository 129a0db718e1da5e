// CP.53: a member function task with a reference parameter.
// expect: CP.53
#include <coframe.hpp>

#include <string>

struct Server {
    std::size_t served = 0;
#ifdef COFRAME_FAIL
    coframe::task<std::size_t> serve(const std::string &request)
#else
    coframe::task<std::size_t> serve(std::string request)
#endif
    {
        served++;
        co_return request.size();
    }
};

int main()
{
    coframe::runtime rt(1);
    Server server;
    return coframe::spawn(rt, &Server::serve, &server, std::string("GET /")).get() == 5 ? 0 : 1;
}
