"""Known-answer vectors, each with its provenance."""

# NIST SP 800-38A (2001), Appendix F.5.1, CTR-AES128.Encrypt.
SP800_38A_F51 = {
    "key": "2b7e151628aed2a6abf7158809cf4f3c",
    "counter": "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
    "plaintext": [
        "6bc1bee22e409f96e93d7e117393172a",
        "ae2d8a571e03ac9c9eb76fac45af8e51",
        "30c81c46a35ce411e5fbc1191a0a52ef",
        "f69f2445df4f9b17ad2b417be66c3710",
    ],
    "ciphertext": [
        "874d6191b620e3261bef6864990db6ce",
        "9806f66b7970fdff8617187bb9fffdff",
        "5ae4df3edbd5d35e5b4f09020db03eab",
        "1e031dda2fbe03d1792170a0f3009cee",
    ],
    # "Output Block" rows of F.5.1: AES_k(counter + i), i.e. the keystream.
    "output_blocks": [
        "ec8cdf7398607cb0f2d21675ea9ea1e4",
        "362b7c3c6773516318a077d7fc5073ae",
        "6a2cc3787889374fbeb4c81b17ba6c44",
        "e89c399ff0f198c6d40a31db156cabfe",
    ],
}

# FIPS-197 (2001), Appendix C.1, AES-128 single-block encryption.
FIPS197_C1 = {
    "key": "000102030405060708090a0b0c0d0e0f",
    "plaintext": "00112233445566778899aabbccddeeff",
    "ciphertext": "69c4e0d86a7b0430d8cdb78070b4c55a",
}
