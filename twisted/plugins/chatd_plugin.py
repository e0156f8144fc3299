from twisted.application.service import ServiceMaker

chatd = ServiceMaker(
    "chatd",
    "chatd.tap",
    "A chat server for PyChat's line protocol and ASVT-chat's binary protocol",
    "chatd",
)
