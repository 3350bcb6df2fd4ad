fn parse(tokens: &[Token]) -> Result<Ast, Error> {
    let key = tokens.first().map(|t| t.kind);
    let secret_len = secret.len();
    let password_prompt = "Enter password:";
    map.insert(key, value);
}
